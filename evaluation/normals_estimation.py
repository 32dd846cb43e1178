"""Surface-normals evaluation (angular errors) of inference.py --generate_eval predictions.

Usage as in the original README, e.g. `python evaluation/normals_estimation.py --pred_path ... --data_path ... --dataset ...`;
`--help` lists every option. The work is done by :func:`pager.evaluation.cli.normals_main`.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pager.evaluation.cli import normals_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(normals_main())
