"""``pager app``: the Gradio demo (same options as ``python app.py``)."""
from pager.app.cli import add_parser, run

__all__ = ["add_parser", "run"]
