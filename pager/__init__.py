"""PaGeR: depth, metric depth and surface normals of 360-degree panoramas with a single-step diffusion model.

Quick start::

    from pager import PagerPipeline
    pipe = PagerPipeline.from_pretrained("default")        # or "prs-eth/PaGeR-depth", or a local folder
    out = pipe("panorama.jpg", modalities=("depth", "normals"))

Sub-packages: :mod:`pager.geometry` (pure spherical math), :mod:`pager.model`, :mod:`pager.data`,
:mod:`pager.training`, :mod:`pager.evaluation`, :mod:`pager.export`, :mod:`pager.cli`, :mod:`pager.app`.
"""
from __future__ import annotations

from pager._lazy import lazy_getattr

__version__ = "0.1.0"

_LAZY = {
    "PagerPipeline": "pager.pipeline",
    "PagerOutput": "pager.pipeline",
    "Pager": "pager.model",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = ["PagerPipeline", "PagerOutput", "Pager", "__version__"]
