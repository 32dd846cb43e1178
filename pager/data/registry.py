"""Dataset registry: ``--dataset`` names -> reader classes, and the :func:`build_dataset` factory."""
from __future__ import annotations

from typing import Dict, Optional, Type

from pager.data.dataset import PanoramaDataset, PathLike
from pager.data.readers import (
    Images,
    Matterport3D360,
    PanoInfinigen,
    Replica360_4K,
    ScannetPP,
    Stanford2D3DS,
    Structured3D,
    Synthetic,
)

DATASETS: Dict[str, Type[PanoramaDataset]] = {
    cls.NAME: cls
    for cls in (PanoInfinigen, Matterport3D360, Stanford2D3DS, ScannetPP, Structured3D, Replica360_4K, Synthetic, Images)
}


def build_dataset(
    name: str,
    data_path: PathLike,
    split: str,
    scenes: str = "both",
    debug: bool = False,
    skip_bad_samples: bool = False,
    augment: bool = False,
    height: Optional[int] = None,
    **kwargs,
) -> PanoramaDataset:
    """Build dataset ``name`` (a key of :data:`DATASETS`) from ``<data_path>/<name>/``.

    ``split`` is train / val / tiny_val / test; further keyword arguments (``target_encoding``,
    ``return_cubemap``, ``cubemap_face_size``, ``debug_size``, ``tiny_val_size``) go to
    :class:`~pager.data.dataset.PanoramaDataset`.
    """
    try:
        cls = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None
    return cls(
        data_path,
        split=split,
        scenes=scenes,
        debug=debug,
        skip_bad_samples=skip_bad_samples,
        augment=augment,
        height=height,
        **kwargs,
    )
