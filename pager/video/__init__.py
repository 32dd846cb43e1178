"""360° video and image sequences: per-frame depth / normals with :class:`~pager.pipeline.PagerPipeline`, made
consistent over time, written resumably (``pager video``).

* :mod:`pager.video.io`: frame sources (video files through PyAV, folders / globs of images) and a video encoder.
* :mod:`pager.video.consistency`: one scale for a relative-depth sequence (robust log-depth alignment to the
  previous frames) and an edge-aware, motion-compensated, two-sided temporal filter.
* :mod:`pager.video.motion`: the camera's rotation and translation between frames by direct alignment.
* :mod:`pager.video.process`: the run: batches through the pipeline, memory-mapped arrays, PNGs, point
  clouds, colour-mapped videos, resume.
"""
from pager.video.consistency import (BackwardSmoother, TemporalAligner, estimate_yaw_shift, filter_sequence, gated_blend,
                                     robust_log_shift, warp_log_map)
from pager.video.motion import estimate_motion
from pager.video.io import VIDEO_SUFFIXES, FrameSource, VideoWriter, open_source
from pager.video.process import VideoOptions, check_outputs, process_video

__all__ = [
    "BackwardSmoother",
    "VIDEO_SUFFIXES",
    "estimate_motion",
    "filter_sequence",
    "warp_log_map",
    "FrameSource",
    "TemporalAligner",
    "VideoOptions",
    "VideoWriter",
    "check_outputs",
    "estimate_yaw_shift",
    "gated_blend",
    "open_source",
    "process_video",
    "robust_log_shift",
]
