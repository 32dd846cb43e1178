"""Panorama datasets: one shared :class:`PanoramaDataset` and a small reader per dataset.

``build_dataset(name, data_path, split, ...)`` builds any of :data:`DATASETS` (PanoInfinigen,
Matterport3D360, Stanford2D3DS, ScannetPP, Structured3D, Replica360_4K, Synthetic) from
``<data_path>/<name>/``. See :mod:`pager.data.dataset` for the sample dictionary.
"""
from pager.data.dataset import BadSampleError, PanoramaDataset, RawSample, SampleRecord, roll_sample
from pager.data.registry import DATASETS, build_dataset

__all__ = ["BadSampleError", "DATASETS", "PanoramaDataset", "RawSample", "SampleRecord", "build_dataset", "roll_sample"]
