"""PaGeR networks: the :class:`Pager` model, checkpoint loading and tiny test checkpoints.

- :class:`Pager` (``pager.model.pager_model``): frozen VAE + one single-step UNet per modality on cube faces.
- ``Pager.from_pretrained(path_or_repo_id | {"depth": ..., "normals": ...})`` (``pager.model.loading``).
- :func:`build_tiny_checkpoint` (``pager.model.tiny``): a small random checkpoint in the released layout.
- Panorama-wide layers and sphere RoPE live in ``pager.model.panorama_layers`` / ``pager.model.rope``.
- The exact low-memory (banded) VAE decoder of ``Pager.enable_tiled_decoding``: ``pager.model.tiled_decoding``.
"""
from __future__ import annotations

from pager.model.loading import ModalityConfig, load_checkpoint, widen_conv_in
from pager.model.pager_model import Pager, default_device, parse_dtype
from pager.model.tiny import build_tiny_base, build_tiny_checkpoint

__all__ = [
    "ModalityConfig",
    "Pager",
    "build_tiny_base",
    "build_tiny_checkpoint",
    "default_device",
    "load_checkpoint",
    "parse_dtype",
    "widen_conv_in",
]
