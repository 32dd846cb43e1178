#!/usr/bin/env python
"""Run a PaGeR checkpoint over a dataset's test split (the original README's ``inference.py``).

Example::

    python inference.py --config configs/inference.yaml --checkpoint_path prs-eth/PaGeR-depth \\
        --data_path path/to/datasets --dataset Matterport3D360 --results_path results --generate_eval

Same as ``pager infer``; see :mod:`pager.cli.infer` for every option and the output layout. Works under
``accelerate launch --num_processes N inference.py ...`` (each sample is written by exactly one process).
"""
import sys

from pager.cli.infer import main

if __name__ == "__main__":
    from pager.cli.launch import relaunch_cpu_processes

    code = relaunch_cpu_processes(__file__, sys.argv[1:])
    sys.exit(main() if code is None else code)
