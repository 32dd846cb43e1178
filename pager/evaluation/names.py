"""Names shared by the evaluation metrics and the command line, without torch (``--help`` stays fast)."""
from __future__ import annotations

from typing import Tuple

#: Evaluation tasks (``evaluation/*.py`` scripts, ``pager evaluate TASK``).
TASKS: Tuple[str, ...] = ("depth", "normals", "edges", "seams")

#: Alignment types accepted by :func:`pager.evaluation.metrics.align_prediction` (``metric`` and ``none`` are
#: synonyms).
ALIGNMENT_TYPES: Tuple[str, ...] = ("metric", "none", "scale", "scale_and_shift", "median", "log_shift")
