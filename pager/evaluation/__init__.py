"""Evaluation of PaGeR predictions: metric functions (tensors in, numbers out) and runners (files in, tables out).

* :mod:`pager.evaluation.metrics`: batched, masked torch metrics for depth, normals, depth edges and
  cube seams (per image, then averaged over images).
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

__all__ = [
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
