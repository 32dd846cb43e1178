"""Depth-edge evaluation (DBE accuracy/completeness, edge precision/recall).

Usage as in the original README, e.g. `python evaluation/edge_estimation.py --pred_path ... --data_path ... --dataset ...`;
`--help` lists every option. The work is done by :func:`pager.evaluation.cli.edges_main`.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pager.evaluation.cli import edges_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(edges_main())
