"""Evaluation of PaGeR predictions: metric functions (tensors in, numbers out) and runners (files in, tables out).

* :mod:`pager.evaluation.metrics`: batched, masked torch metrics for depth, normals, depth edges and
  cube seams (per image, then averaged over images).
* :mod:`pager.evaluation.temporal`: video metrics (flicker between frames warped with the true poses,
  per-frame depth metrics with per-frame or whole-sequence alignment).
* :mod:`pager.evaluation.runners`: the command-line runners behind ``evaluation/*.py`` and
  ``pager evaluate``; they read ``inference.py --generate_eval`` predictions and a dataset split.
"""

from pager.evaluation.metrics import (
    ALIGNMENT_TYPES,
    DEPTH_METRICS,
    EDGE_METRICS,
    NORMALS_METRICS,
    SEAM_METRICS,
    align_prediction,
    average_over_images,
    depth_metrics,
    edge_metrics,
    erp_face_index,
    latitude_weights,
    normals_metrics,
    seam_metrics,
    seam_pairs,
    sobel_edges,
)
from pager.evaluation.temporal import align_sequence_log_shift, flicker, frame_depth_metrics, sequence_flicker

__all__ = [
    "align_sequence_log_shift",
    "flicker",
    "frame_depth_metrics",
    "sequence_flicker",
    "ALIGNMENT_TYPES",
    "DEPTH_METRICS",
    "EDGE_METRICS",
    "NORMALS_METRICS",
    "SEAM_METRICS",
    "align_prediction",
    "average_over_images",
    "depth_metrics",
    "edge_metrics",
    "erp_face_index",
    "latitude_weights",
    "normals_metrics",
    "seam_metrics",
    "seam_pairs",
    "sobel_edges",
]
