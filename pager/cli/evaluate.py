"""``pager evaluate {depth,normals,edges,seams} ...``: the evaluation runners of :mod:`pager.evaluation`."""
from pager.evaluation.cli import add_parser, run

__all__ = ["add_parser", "run"]
