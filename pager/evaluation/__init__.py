"""Evaluation of PaGeR predictions: metric functions (tensors in, numbers out) and runners (files in, tables out).

* :mod:`pager.evaluation.metrics`: batched, masked torch metrics for depth, normals, depth edges and
  cube seams (per image, then averaged over images).
* :mod:`pager.evaluation.temporal`: video metrics (flicker between frames warped with the true poses,
  per-frame depth metrics with per-frame or whole-sequence alignment).
* :mod:`pager.evaluation.runners`: the command-line runners behind ``evaluation/*.py`` and
  ``pager evaluate``; they read ``inference.py --generate_eval`` predictions and a dataset split.
"""

from pager._lazy import lazy_getattr

# Imported on first use (``pager.evaluation.X``), so that the torch-free command line (pager.evaluation.cli,
# behind ``evaluation/*.py --help``) does not load torch through this package.
_LAZY = {
    "ALIGNMENT_TYPES": "pager.evaluation.metrics",
    "DEPTH_METRICS": "pager.evaluation.metrics",
    "EDGE_METRICS": "pager.evaluation.metrics",
    "NORMALS_METRICS": "pager.evaluation.metrics",
    "SEAM_METRICS": "pager.evaluation.metrics",
    "align_prediction": "pager.evaluation.metrics",
    "average_over_images": "pager.evaluation.metrics",
    "depth_metrics": "pager.evaluation.metrics",
    "edge_metrics": "pager.evaluation.metrics",
    "erp_face_index": "pager.evaluation.metrics",
    "latitude_weights": "pager.evaluation.metrics",
    "normals_metrics": "pager.evaluation.metrics",
    "seam_metrics": "pager.evaluation.metrics",
    "seam_pairs": "pager.evaluation.metrics",
    "sobel_edges": "pager.evaluation.metrics",
    "align_sequence_log_shift": "pager.evaluation.temporal",
    "flicker": "pager.evaluation.temporal",
    "frame_depth_metrics": "pager.evaluation.temporal",
    "sequence_flicker": "pager.evaluation.temporal",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


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
