"""Train a PaGeR model (as in the original README); see ``python train.py --help``.

    python train.py --config configs/base.yaml --modality depth --data_path DATA --dataset PanoInfinigen --log_scale ...
    accelerate launch --num_processes 2 train.py ...         # several GPUs
    accelerate launch --num_processes 2 --cpu train.py ...   # several CPU processes
"""
import sys

from pager.cli.train import main

if __name__ == "__main__":
    from pager.cli.launch import relaunch_cpu_processes

    code = relaunch_cpu_processes(__file__, sys.argv[1:])
    sys.exit(main() if code is None else code)
