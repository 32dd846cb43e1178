"""Shared panorama dataset logic: one base class, one small reader per dataset.

A reader (subclass of :class:`PanoramaDataset`, one per file in ``pager/data/readers/``) only lists
its samples (:meth:`PanoramaDataset.list_records`) and decodes one of them
(:meth:`PanoramaDataset.load_record`) into a :class:`RawSample` of numpy arrays. Everything else lives
here, once: splits (``train``, ``val``, ``tiny_val``, ``test``), debug subsets, value ranges and masks,
the evaluation band of rows at the poles, resizing, roll augmentation (which also rotates normals),
optional training targets in [-1, 1] and optional per-sample cubemaps.

Sample dictionary returned by ``dataset[i]`` (``H`` = output height, ``W = 2 * H``)::

    id          str    unique within the split, filesystem-safe (path parts joined with "__")
    rgb         float32 [3, H, W]  in [-1, 1]
    depth       float32 [1, H, W]  range along the ray in metres, raw (not clipped); 0 where unknown
    mask        bool    [1, H, W]  finite depth within (1.01 * min_depth, 0.99 * max_depth), and the
                                   dataset's own validity mask where it has one
    eval_mask   bool    [1, H, W]  ``mask`` without the dataset's evaluation band of top/bottom rows
                                   (Matterport3D360 14 %, Stanford2D3DS 15 %; equal to ``mask`` elsewhere)
    normals     float32 [3, H, W]  only for datasets with normals: unit vectors in OUR world frame
                                   (see ``pager.geometry``), zero where the file has none
    min_depth, max_depth  float   the dataset's depth range in metres
    scene_type  str    "indoor" or "outdoor"
    dataset     str    the dataset's registry name
    (optional) depth_target float32 [1, H, W] in [-1, 1] with ``target_encoding``
    (optional) rgb_cubemap [6, 3, F, F], depth_cubemap [6, 1, F, F], mask_cubemap [6, 1, F, F] bool,
               normals_cubemap [6, 3, F, F] with ``return_cubemap=True``

Bad data is never replaced by zeros: a missing or undecodable file raises ``FileNotFoundError`` /
``ValueError`` naming the file and the dataset; with ``skip_bad_samples=True`` the failure is logged,
counted in :attr:`PanoramaDataset.skipped` and the next good sample is returned instead.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from pager.config_schema import SCENES
from pager.geometry import erp_to_cubemap, roll_erp, roll_normals
from pager.geometry.depth_encoding import VALID_MAX_FACTOR, VALID_MIN_FACTOR

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

SPLITS = ("train", "val", "tiny_val", "test")


class BadSampleError(ValueError):
    """A sample whose files exist but cannot be used (undecodable, wrong size, missing key...)."""


@dataclass
class SampleRecord:
    """One listed sample: a unique id, its scene type and whatever the reader needs to load it.

    ``files`` are the paths the sample needs (checked for existence when ``skip_bad_samples`` is on);
    ``extra`` holds reader-specific values (LMDB shard, key, ...). ``reference_id`` is the id the original
    PaGeR dataloader (prs-eth/PaGeR) gives the same sample, i.e. the name (``<reference_id>.npz``) its
    ``inference.py --generate_eval`` writes the prediction under; None for datasets it does not read.
    """

    id: str
    scene_type: str = "indoor"
    files: Dict[str, Path] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)
    reference_id: Optional[str] = None


@dataclass
class RawSample:
    """A decoded sample before the shared processing (numpy, native resolution).

    rgb: ``[H, W, 3]`` uint8 (or uint16 / float in [0, 1]); depth: ``[H, W]`` float metres (any
    NaN/inf/negative marks unknown); normals: ``[H, W, 3]`` float vectors in OUR world frame
    (normalised by the base; 0 = unknown), or None;
    valid: ``[H, W]`` bool extra validity mask from the dataset, or None.
    """

    rgb: np.ndarray
    depth: np.ndarray
    normals: Optional[np.ndarray] = None
    valid: Optional[np.ndarray] = None


def safe_id(*parts: str) -> str:
    """Join id parts with ``"__"``, replacing path separators so the id is a valid file name."""
    cleaned = [str(p).replace("/", "_").replace("\\", "_").replace(os.sep, "_") for p in parts if str(p) != ""]
    out = "__".join(cleaned)
    if not out or out in (".", ".."):
        raise ValueError(f"cannot build a sample id from {parts!r}")
    return out


def tiny_subset(n: int, size: int) -> List[int]:
    """Evenly spaced, deterministic indices ``[0, n)`` of at most ``size`` elements (first and last included)."""
    if n <= size:
        return list(range(n))
    if size <= 1:
        return [0][:size]
    return sorted({int(round(i * (n - 1) / (size - 1))) for i in range(size)})


def band_rows(height: int, fraction: float) -> int:
    """Number of rows masked at the top and at the bottom for an evaluation band of ``fraction``."""
    return int(fraction * height) if fraction > 0 else 0


# ----------------------------------------------------------------------------------------------
# Geometry (pager.geometry holds the conventions; nothing is re-derived here)
# ----------------------------------------------------------------------------------------------

def roll_sample(sample: Dict[str, Any], shift: int) -> Dict[str, Any]:
    """Roll every ERP tensor ``[C, H, W]`` of a sample dict by ``shift`` columns to the right
    (``pager.geometry.roll_erp``) and rotate its normals with the scene (``pager.geometry.roll_normals``:
    about the up axis by ``2*pi*shift/W``)."""
    out = dict(sample)
    for key in ("rgb", "depth", "mask", "eval_mask", "depth_target"):
        if key in out and torch.is_tensor(out[key]):
            out[key] = roll_erp(out[key][None], int(shift))[0]
    if "normals" in out and torch.is_tensor(out["normals"]):
        out["normals"] = roll_normals(out["normals"][None], int(shift))[0]
    return out


def _to_cubemap(erp: torch.Tensor, face_size: int, mode: str = "bilinear") -> torch.Tensor:
    """ERP ``[C, H, W]`` -> cubemap ``[6, C, F, F]`` (faces F, R, B, L, U, D, pytorch360convert layout)."""
    return erp_to_cubemap(erp[None].float(), face_size, mode=mode)[0]


# ----------------------------------------------------------------------------------------------
# Array conversion and resizing
# ----------------------------------------------------------------------------------------------

def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """float32 tensor sharing memory with ``array`` when possible (copies read-only or other dtypes)."""
    array = np.asarray(array)
    if array.dtype != np.float32 or not array.flags.writeable:
        array = np.array(array, dtype=np.float32)
    return torch.from_numpy(array)


def rgb_to_tensor(rgb: np.ndarray, what: str = "rgb") -> torch.Tensor:
    """``[H, W, C]`` uint8/uint16/float[0,1] image -> float32 ``[3, H, W]`` in [-1, 1] (alpha dropped)."""
    if rgb.ndim == 2:
        rgb = rgb[:, :, None]
    if rgb.ndim != 3 or rgb.shape[2] not in (1, 3, 4):
        raise BadSampleError(f"{what}: expected an image [H, W, 1|3|4], got shape {rgb.shape}")
    if rgb.dtype in (np.uint8, np.uint16):
        scale = 255.0 if rgb.dtype == np.uint8 else 65535.0
        src = np.array(rgb, dtype=np.int32 if rgb.dtype == np.uint16 else np.uint8)  # writable copy
        x = torch.from_numpy(src).float() / scale
    elif np.issubdtype(rgb.dtype, np.floating):  # the rule of every input (pager.io_utils.image_to_float): a float
        from pager.io_utils import image_to_float  # image must be finite and in [0, 1]; nothing is clipped silently

        try:
            x = torch.from_numpy(image_to_float(rgb, name=what, advice=(
                "predict it with `pager predict --normalize_input` (datasets are read as they are)")))
        except ValueError as exc:
            raise BadSampleError(str(exc)) from exc
    else:
        raise BadSampleError(f"{what}: unsupported image dtype {rgb.dtype}")
    x = x.permute(2, 0, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return (x[:3] * 2.0 - 1.0).contiguous()


def resize_rgb(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[C, H, W]`` float -> ``[C, height, width]``: area when shrinking, bilinear when enlarging."""
    if tuple(x.shape[-2:]) == (height, width):
        return x
    shrink = height <= x.shape[-2] and width <= x.shape[-1]
    if shrink:
        return F.interpolate(x[None], size=(height, width), mode="area")[0]
    return F.interpolate(x[None], size=(height, width), mode="bilinear", align_corners=False)[0]


def resize_nearest(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[C, H, W]`` (any dtype) -> ``[C, height, width]`` with nearest (pixel-centre) sampling."""
    if tuple(x.shape[-2:]) == (height, width):
        return x
    dtype = x.dtype
    y = F.interpolate(x[None].float(), size=(height, width), mode="nearest-exact")[0]
    return y.to(dtype)


def resize_normals(n: torch.Tensor, height: int, width: int, eps: float = 1e-6) -> torch.Tensor:
    """``[3, H, W]`` unit normals -> ``[3, height, width]``, resampled like RGB then renormalised (0 stays 0)."""
    if tuple(n.shape[-2:]) == (height, width):
        return n
    y = resize_rgb(n, height, width)
    norm = y.norm(dim=0, keepdim=True)
    return torch.where(norm > eps, y / norm.clamp_min(eps), torch.zeros_like(y))


def unit_normals(n: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``[3, H, W]`` float -> unit vectors; NaN/inf and vectors shorter than ``eps`` become 0 (unknown)."""
    n = torch.nan_to_num(n.float(), nan=0.0, posinf=0.0, neginf=0.0)
    norm = torch.linalg.vector_norm(n, dim=0, keepdim=True)
    return torch.where(norm > eps, n / norm.clamp_min(eps), torch.zeros_like(n))


# ----------------------------------------------------------------------------------------------
# The base dataset
# ----------------------------------------------------------------------------------------------

class PanoramaDataset(Dataset):
    """Base class of every panorama dataset (ERP RGB + depth in metres [+ normals]).

    Args:
        data_path: the root holding one folder per dataset (``<data_path>/<NAME>/...``); a path that
            already ends in the dataset's folder is accepted too.
        split: ``train``, ``val``, ``tiny_val`` (at most ``tiny_val_size`` evenly spaced samples of
            ``val``) or ``test``.
        scenes: ``indoor``, ``outdoor`` or ``both``.
        debug: keep only the first ``debug_size`` samples (before the ``tiny_val`` subset is taken).
        skip_bad_samples: log, count (:attr:`skipped`) and skip bad samples instead of raising.
        augment: random horizontal roll (normals rotated about the vertical axis to match).
        height: output height (width ``2 * height``); None keeps the native height. A native image
            that is not 2:1 is resampled to width ``2 * H``.
        target_encoding: None, ``"log"`` / ``"linear"`` (``pager.geometry.depth_encoding.encode_depth``
            with the dataset's range) or ``"affine"`` (per-image 2-98 % quantiles): adds ``depth_target``.
        return_cubemap: also return per-sample cubemaps (compatibility; off by default because the
            model converts ERP batches on its device). ``cubemap_face_size`` defaults to ``3 * H // 4``.
        rgb_only: read only the RGB image of each sample (inference needs no ground truth): samples are
            ``{"id", "rgb", "scene_type", "dataset"}`` and only the ``rgb`` file must exist. Readers whose
            samples have no separate ``rgb`` file (LMDB shards) decode the whole sample.
    """

    NAME: ClassVar[str] = ""
    SUBDIR: ClassVar[Optional[str]] = None  # folder under data_path; defaults to NAME
    MIN_DEPTH: ClassVar[float] = 0.01
    MAX_DEPTH: ClassVar[float] = 75.0
    MASK_MIN_FACTOR: ClassVar[float] = VALID_MIN_FACTOR  # valid depth > MASK_MIN_FACTOR * min_depth (1.01, reference)
    MASK_MAX_FACTOR: ClassVar[float] = VALID_MAX_FACTOR  # valid depth < MASK_MAX_FACTOR * max_depth (0.99, reference)
    EVAL_BAND: ClassVar[float] = 0.0  # fraction of rows masked at top and bottom for evaluation
    HAS_NORMALS: ClassVar[bool] = False
    SCENE_TYPES: ClassVar[Tuple[str, ...]] = ("indoor",)

    def __init__(
        self,
        data_path: PathLike,
        split: str = "test",
        scenes: str = "both",
        debug: bool = False,
        skip_bad_samples: bool = False,
        augment: bool = False,
        height: Optional[int] = None,
        target_encoding: Optional[str] = None,
        return_cubemap: bool = False,
        cubemap_face_size: Optional[int] = None,
        debug_size: int = 100,
        tiny_val_size: int = 16,
        rgb_only: bool = False,
    ) -> None:
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"{self.NAME}: unknown split {split!r}; expected one of {SPLITS}")
        if scenes not in SCENES:
            raise ValueError(f"{self.NAME}: unknown scenes {scenes!r}; expected one of {SCENES}")
        if scenes != "both" and scenes not in self.SCENE_TYPES:
            raise ValueError(
                f"{self.NAME} has only {'/'.join(self.SCENE_TYPES)} scenes; scenes={scenes!r} selects nothing"
            )
        if target_encoding not in (None, "log", "linear", "affine"):
            raise ValueError(f"target_encoding must be None, 'log', 'linear' or 'affine', got {target_encoding!r}")
        if height is not None and (int(height) < 1):
            raise ValueError(f"height must be a positive integer, got {height!r}")
        self.data_path = Path(data_path)
        self.root = self._resolve_root(self.data_path)
        self.split = split
        self.scenes = scenes
        self.debug = debug
        self.skip_bad_samples = skip_bad_samples
        self.augment = augment
        self.height = int(height) if height is not None else None
        self.target_encoding = target_encoding
        self.return_cubemap = return_cubemap
        self.cubemap_face_size = cubemap_face_size
        self.rgb_only = bool(rgb_only)
        self.skipped = 0
        self._bad: set = set()
        self.min_depth, self.max_depth = self.depth_range()

        base_split = "val" if split == "tiny_val" else split
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.NAME}: dataset folder not found: {self.root}")
        records = list(self.list_records(self.root, base_split, scenes))
        records.sort(key=lambda r: r.id)
        ids = [r.id for r in records]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise ValueError(f"{self.NAME}: duplicate sample ids in {self.root} split {base_split}: {dupes}")
        if skip_bad_samples:
            records = self._drop_missing(records)
        if debug:
            records = records[:debug_size]
        if split == "tiny_val":
            records = [records[i] for i in tiny_subset(len(records), tiny_val_size)]
        if not records:
            raise ValueError(
                f"{self.NAME}: split {split!r} (scenes={scenes}) is empty; searched {self.describe_search(self.root, base_split)}"
            )
        self.records: List[SampleRecord] = records
        logger.info("%s %s: %d samples from %s", self.NAME, split, len(records), self.root)

    # -- to be provided by readers ----------------------------------------------------------
    def list_records(self, root: Path, split: str, scenes: str) -> Sequence[SampleRecord]:
        """All samples of ``split`` (train/val/test) under the dataset folder ``root``."""
        raise NotImplementedError

    def load_record(self, record: SampleRecord) -> RawSample:
        """Decode one sample; raise FileNotFoundError / ValueError naming the offending file."""
        raise NotImplementedError

    def describe_search(self, root: Path, split: str) -> str:
        """Where the listing looked (used in the empty-split error)."""
        return str(root)

    def depth_range(self) -> Tuple[float, float]:
        """``(min_depth, max_depth)`` in metres for this instance (may depend on ``scenes``)."""
        return float(self.MIN_DEPTH), float(self.MAX_DEPTH)

    # -- shared logic ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.NAME

    def _resolve_root(self, data_path: Path) -> Path:
        sub = self.SUBDIR or self.NAME
        candidate = data_path / sub
        if not candidate.is_dir() and data_path.name == sub and data_path.is_dir():
            return data_path
        return candidate

    def _drop_missing(self, records: List[SampleRecord]) -> List[SampleRecord]:
        kept = []
        for rec in records:
            needed = {"rgb": rec.files["rgb"]} if (self.rgb_only and "rgb" in rec.files) else rec.files
            missing = [str(p) for p in needed.values() if not Path(p).exists()]
            if missing:
                self.skipped += 1
                logger.warning("%s: skipping sample %s, missing file(s): %s", self.NAME, rec.id, ", ".join(missing))
            else:
                kept.append(rec)
        return kept

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        n = len(self.records)
        if not -n <= index < n:
            raise IndexError(f"{self.NAME}: index {index} out of range for {n} samples")
        index %= n
        for attempt in range(n):
            j = (index + attempt) % n
            if j in self._bad:
                continue
            try:
                return self.get_sample(j)
            except (OSError, ValueError, KeyError) as exc:
                if not self.skip_bad_samples:
                    raise
                self._bad.add(j)
                self.skipped += 1
                logger.warning("%s: skipping bad sample %s: %s", self.NAME, self.records[j].id, exc)
        raise RuntimeError(f"{self.NAME}: every sample of split {self.split!r} in {self.root} failed to load")

    def load_raw(self, index: int) -> RawSample:
        """Decode sample ``index`` (no processing); errors name the file and the dataset."""
        record = self.records[index]
        try:
            return self.load_record(record)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{self.NAME} sample {record.id}: {exc}") from exc
        except (OSError, ValueError, KeyError) as exc:
            raise BadSampleError(f"{self.NAME} sample {record.id}: {exc}") from exc

    def get_sample(self, index: int) -> Dict[str, Any]:
        """The processed sample dict of ``index`` (raises on bad data, never skips)."""
        record = self.records[index]
        if self.rgb_only and "rgb" in record.files:
            return self._rgb_sample(record)
        raw = self.load_raw(index)
        sample = self.process(raw, record)
        if self.augment:
            shift = int(torch.randint(0, sample["rgb"].shape[-1], (1,)).item())
            sample = roll_sample(sample, shift)
        if self.target_encoding is not None:
            sample["depth_target"] = self.encode_target(sample["depth"], sample["mask"])
        if self.return_cubemap:
            sample.update(self.cubemaps(sample))
        return sample

    def _rgb_sample(self, record: SampleRecord) -> Dict[str, Any]:
        """The RGB of ``record`` alone (``rgb_only``), resized like :meth:`process` does."""
        from pager.data.readers._io import read_rgb

        path = Path(record.files["rgb"])
        if not path.is_file():
            raise FileNotFoundError(f"{self.NAME} sample {record.id}: rgb file not found: {path}")
        try:
            rgb = rgb_to_tensor(read_rgb(path, what=f"{self.NAME} rgb"), what=f"{self.NAME} rgb {path}")
        except (OSError, ValueError) as exc:
            raise BadSampleError(f"{self.NAME} sample {record.id}: {exc}") from exc
        h0, w0 = int(rgb.shape[-2]), int(rgb.shape[-1])
        if h0 < 2 or w0 < 2:  # the rule of pager predict (pager.pipeline.load_rgb)
            raise BadSampleError(f"{self.NAME} sample {record.id}: {path}: image of size {w0}x{h0} is too small "
                                 "(at least 2x2 pixels)")
        h = self.height if self.height is not None else rgb.shape[-2]
        if w0 != 2 * h0:
            logger.warning("%s: %dx%d is not a 2:1 equirectangular panorama; it is read as a full sphere (stretched "
                           "to %dx%d)", path, w0, h0, 2 * h, h)
        rgb = resize_rgb(rgb, h, 2 * h)
        return {"id": record.id, "rgb": rgb.contiguous(), "scene_type": record.scene_type, "dataset": self.NAME}

    def process(self, raw: RawSample, record: SampleRecord) -> Dict[str, Any]:
        """Shared processing of a decoded sample: tensors, masks, resizing, evaluation band."""
        where = ", ".join(str(p) for p in record.files.values()) or record.id
        rgb = rgb_to_tensor(raw.rgb, what=f"{self.NAME} rgb of {record.id} ({where})")
        depth_np = np.asarray(raw.depth)
        if depth_np.ndim == 3 and depth_np.shape[-1] == 1:
            depth_np = depth_np[..., 0]
        if depth_np.ndim != 2:
            raise BadSampleError(f"{self.NAME}: depth must be [H, W], got shape {depth_np.shape} ({where})")
        h, w = depth_np.shape
        if tuple(rgb.shape[-2:]) != (h, w):
            raise BadSampleError(
                f"{self.NAME}: RGB size {tuple(rgb.shape[-2:])} differs from depth size {(h, w)} (H, W) in {where}"
            )
        depth = _as_tensor(depth_np)[None]
        finite = torch.isfinite(depth) & (depth > 0)
        depth = torch.where(finite, depth, torch.zeros_like(depth))
        mask = finite & (depth > self.MASK_MIN_FACTOR * self.min_depth) & (depth < self.MASK_MAX_FACTOR * self.max_depth)
        if raw.valid is not None:
            valid = np.asarray(raw.valid)
            if valid.shape != (h, w):
                raise BadSampleError(f"{self.NAME}: mask size {valid.shape} differs from depth size {(h, w)} in {where}")
            mask &= torch.from_numpy(valid.astype(bool))[None]
        normals = None
        if raw.normals is not None:
            n = np.asarray(raw.normals)
            if n.ndim == 3 and n.shape[0] == 3 and n.shape[-1] != 3:
                n = np.moveaxis(n, 0, -1)
            if n.shape != (h, w, 3):
                raise BadSampleError(f"{self.NAME}: normals shape {n.shape} differs from depth size {(h, w)} in {where}")
            normals = unit_normals(_as_tensor(n).permute(2, 0, 1)).contiguous()

        out_h = self.height if self.height is not None else h
        out_w = 2 * out_h
        if (out_h, out_w) != (h, w):
            rgb = resize_rgb(rgb, out_h, out_w)
            depth = resize_nearest(depth, out_h, out_w)
            mask = resize_nearest(mask, out_h, out_w)
            if normals is not None:
                normals = resize_normals(normals, out_h, out_w)
        band = band_rows(out_h, self.EVAL_BAND)
        eval_mask = mask.clone()
        if band > 0:
            eval_mask[:, :band] = False
            eval_mask[:, out_h - band:] = False
        sample: Dict[str, Any] = {
            "id": record.id,
            "rgb": rgb.contiguous(),
            "depth": depth.contiguous(),
            "mask": mask.contiguous(),
            "eval_mask": eval_mask,
            "min_depth": float(self.min_depth),
            "max_depth": float(self.max_depth),
            "scene_type": record.scene_type,
            "dataset": self.NAME,
        }
        if normals is not None:
            sample["normals"] = normals
        return sample

    def encode_target(self, depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Training target ``[1, H, W]`` in [-1, 1] from metres, per ``target_encoding``."""
        from pager.geometry.depth_encoding import affine_normalize_depth, encode_depth

        if self.target_encoding == "affine":
            if not bool(mask.any()):
                raise BadSampleError(f"{self.NAME}: no valid depth pixel for the affine target")
            return affine_normalize_depth(depth[None], mask[None])[0]
        # unknown (0) depth encodes to -1 after clamping; the mask says it is not supervised
        return encode_depth(depth, self.min_depth, self.max_depth, log_scale=self.target_encoding == "log")

    def cubemaps(self, sample: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """Per-sample cubemaps ``[6, C, F, F]`` of the ERP tensors (compatibility path)."""
        face = self.cubemap_face_size or max(1, 3 * sample["rgb"].shape[-2] // 4)
        out = {
            "rgb_cubemap": _to_cubemap(sample["rgb"], face),
            "depth_cubemap": _to_cubemap(sample["depth"], face),
            "mask_cubemap": _to_cubemap(sample["mask"].float(), face) > 0.99,
        }
        if "normals" in sample:
            out["normals_cubemap"] = _to_cubemap(sample["normals"], face)
        if "depth_target" in sample:
            out["depth_target_cubemap"] = _to_cubemap(sample["depth_target"], face)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, scenes={self.scenes!r}, n={len(self)})"
