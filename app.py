"""PaGeR Gradio demo (as in the original README): ``python app.py [--checkpoint_path CKPT] [--enable_xformers]
[--host 127.0.0.1 --port 7860]``; see ``python app.py --help``."""
import sys

from pager.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
