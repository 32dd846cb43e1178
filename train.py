"""Train a PaGeR model (as in the original README); see ``python train.py --help``.

    python train.py --config configs/base.yaml --modality depth --data_path DATA --dataset PanoInfinigen --log_scale ...
    accelerate launch --num_processes 2 train.py ...     # several GPUs / processes
"""
import sys

from pager.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
