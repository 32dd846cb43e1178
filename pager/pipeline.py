"""``PagerPipeline``: the public, diffusers-like entry point (images in, ERP geometry out).

Example::

    from pager import PagerPipeline
    pipe = PagerPipeline.from_pretrained({"depth": "prs-eth/PaGeR-depth", "normals": "prs-eth/PaGeR-normals"})
    out = pipe(["room.jpg", "street.png"], modalities=("depth", "normals"))
    out.depth      # [N, H, W] float32, metres (metric models) or relative depth
    out.normals    # [N, H, W, 3] float32 unit vectors, PaGeR world frame (x forward, y up, z right)
    out.mask       # [N, H, W] bool, valid pixels (kept separate; never multiplied into the predictions)

Inputs may be file paths (or a folder), PIL images, numpy arrays ``[H, W]``/``[H, W, C]`` (uint8, uint16 or
float in [0, 1]), torch tensors ``[3, H, W]``/``[B, 3, H, W]`` (float in [0, 1] or uint8), or a list of
these. Grayscale is repeated to RGB, alpha is dropped. Outputs are at each input's resolution (or
``output_height x 2*output_height``); an input that is not 2:1 is still read as a full sphere (a warning
says so), i.e. it is stretched to 2:1 for the model and the outputs are stretched back.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from pager.model.pager_model import Pager, iter_modalities, parse_dtype

logger = logging.getLogger(__name__)

ImageInput = Union[str, os.PathLike, np.ndarray, torch.Tensor, Any]

#: Default of ``PagerPipeline.__call__(modalities=...)``: every loaded modality among these, silently.
DEFAULT_MODALITIES = ("depth", "normals")


@dataclass
class PagerOutput:
    """Predictions for ``N`` panoramas, each at its input resolution ``H x W``.

    When all inputs share one size the fields are stacked numpy arrays (the shapes below); otherwise (inputs of
    different sizes, e.g. a folder of mixed panoramas) every field is a list of ``N`` arrays, one per image at its
    own size, without the leading ``N`` (``depth[i]``: ``[H_i, W_i]``). Fields of modalities that were not
    requested are ``None``.

    Attributes:
        depth: ``[N, H, W]`` float32; metres for metric checkpoints, else relative depth (log models: up to a
            global scale), decoded with the checkpoint's ``min_depth``/``max_depth``.
        normals: ``[N, H, W, 3]`` float32 unit vectors in PaGeR's world frame (x forward, y up, z right),
            channels last like images.
        depth_mask, normals_mask: ``[N, H, W]`` bool validity of each modality (depth: not saturated at
            the range ends; normals: non-degenerate).
        mask: ``[N, H, W]`` bool, the AND of the masks of the requested modalities.
        rgb: ``[N, H, W, 3]`` uint8 input images.
        metadata: one dict per image: ``source`` (file name or ``"<array i>"``), ``input_size``, ``face_size``,
            ``stitching`` (``"exact"`` or ``"reference"``), ``depth_unit`` (``"m"`` or ``"relative"``),
            checkpoint names, depth range.
    """

    depth: Optional[Union[np.ndarray, List[np.ndarray]]] = None
    normals: Optional[Union[np.ndarray, List[np.ndarray]]] = None
    depth_mask: Optional[Union[np.ndarray, List[np.ndarray]]] = None
    normals_mask: Optional[Union[np.ndarray, List[np.ndarray]]] = None
    mask: Optional[Union[np.ndarray, List[np.ndarray]]] = None
    rgb: Optional[Union[np.ndarray, List[np.ndarray]]] = None
    metadata: List[Dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.metadata)


# ------------------------------------------------------------------------------------------------
# input decoding
# ------------------------------------------------------------------------------------------------


def _expand_inputs(images: Union[ImageInput, Sequence[ImageInput]]) -> List[Tuple[Any, str]]:
    """Flatten inputs into ``(item, name)`` pairs; folders become their sorted image files."""
    from pager.io_utils import IMAGE_SUFFIXES

    if isinstance(images, (list, tuple)):
        items = list(images)
    else:
        items = [images]
    out: List[Tuple[Any, str]] = []
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if path.is_dir():
                files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
                if not files:
                    raise FileNotFoundError(f"folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
                out.extend((f, str(f)) for f in files)
            else:
                out.append((path, str(path)))
        elif isinstance(item, torch.Tensor) and item.dim() == 4:
            out.extend((item[b], f"<tensor {i}[{b}]>") for b in range(item.shape[0]))
        else:
            out.append((item, f"<{type(item).__name__} {i}>"))
    if not out:
        raise ValueError("no images given")
    return out


def _pil_to_array(img: Any) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(img, dtype=np.uint16)
    if img.mode == "I":
        arr = np.asarray(img, dtype=np.int64)
        return arr.astype(np.uint16) if arr.min() >= 0 and arr.max() <= 65535 else arr.astype(np.float32)
    if img.mode == "F":
        return np.asarray(img, dtype=np.float32)
    if img.mode in ("L", "RGB"):
        return np.asarray(img)
    return np.asarray(img.convert("RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB"))


def load_rgb(item: Any, name: str, normalize: bool = False, keep_uint8: bool = False) -> np.ndarray:
    """Decode one input to float32 RGB ``[H, W, 3]`` in [0, 1]; errors name the input.

    Nothing is altered silently (see :func:`pager.io_utils.image_to_float`): NaN/inf pixels raise
    ``ValueError``; float values outside [0, 1] (a float TIFF, an HDR/EXR panorama) raise too unless
    ``normalize=True``, which maps them linearly to [0, 1] with a warning.

    ``keep_uint8``: an 8-bit input comes back as uint8 RGB ``[H, W, 3]`` (0..255, alpha dropped as a view, grey
    repeated) instead of float32: a quarter of the memory, and the same numbers (float32 ``rgb / 255``).
    """
    from pager.io_utils import image_to_float, read_image

    if isinstance(item, (str, os.PathLike)):
        arr = read_image(item, what="image")
    elif isinstance(item, torch.Tensor):
        t = item.detach().cpu()
        if t.dim() == 2:
            t = t[None]
        if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
            raise ValueError(f"{name}: tensor images must be [C, H, W] or [B, C, H, W] with C in 1, 3, 4; got {tuple(item.shape)}")
        if t.dtype == torch.uint8:
            arr = t.permute(1, 2, 0).numpy()
        elif t.is_floating_point():
            arr = t.float().permute(1, 2, 0).numpy()
        else:
            raise ValueError(f"{name}: unsupported tensor dtype {t.dtype} (use float in [0, 1] or uint8)")
    elif isinstance(item, np.ndarray):
        arr = item
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 2, 3, 4):
            raise ValueError(f"{name}: numpy images must be channels-last [H, W, C], got {arr.shape}")
    elif hasattr(item, "mode") and hasattr(item, "getbands"):  # PIL image
        arr = _pil_to_array(item)
    else:
        raise ValueError(f"{name}: unsupported image type {type(item).__name__} (path, PIL image, numpy array or tensor)")
    arr = np.asarray(arr)
    if keep_uint8 and arr.dtype == np.uint8 and arr.ndim in (2, 3):
        rgb = arr if arr.ndim == 3 else arr[:, :, None]
        if rgb.shape[2] in (1, 2):
            rgb = np.repeat(rgb[:, :, :1], 3, axis=2)
        elif rgb.shape[2] == 4:
            rgb = rgb[:, :, :3]
        elif rgb.shape[2] != 3:
            raise ValueError(f"{name}: expected an image array [H, W, C] with C in 1..4, got shape {arr.shape}")
        if np.shares_memory(rgb, arr) and isinstance(item, (np.ndarray, torch.Tensor)):
            rgb = rgb.copy()  # never an alias of the caller's array (the outputs' rgb would change with it)
    else:
        rgb = image_to_float(arr, name=name, normalize=normalize)
    if rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise ValueError(f"{name}: image of size {rgb.shape[1]}x{rgb.shape[0]} is too small (at least 2x2 pixels)")
    return rgb


# ------------------------------------------------------------------------------------------------
# the pipeline
# ------------------------------------------------------------------------------------------------


class PagerPipeline:
    """Predict depth and/or normals of 360° ERP panoramas with a :class:`~pager.model.Pager` model."""

    def __init__(self, model: Pager) -> None:
        self.model = model

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: Union[str, os.PathLike, Mapping[str, Union[str, os.PathLike]], None] = "default",
        modality: Optional[str] = None,
        variant: Optional[str] = None,
        torch_dtype: Union[str, torch.dtype, None] = torch.float32,
        device: Union[str, torch.device, None] = None,
        allow_pickle: bool = False,
        enable_xformers: bool = False,
        **kwargs: Any,
    ) -> "PagerPipeline":
        """Load checkpoints (repo id, local folder, ``{"depth": ..., "normals": ...}`` or ``"default"``)."""
        model = Pager.from_pretrained(
            path_or_repo_id, modality=modality, variant=variant, torch_dtype=torch_dtype, device=device,
            allow_pickle=allow_pickle, enable_xformers=enable_xformers, **kwargs,
        )
        return cls(model)

    def to(self, device: Union[str, torch.device, None] = None, dtype: Union[str, torch.dtype, None] = None) -> "PagerPipeline":
        """Move the model (like ``nn.Module.to``); returns ``self``."""
        from pager.model.pager_model import device_dtype

        kwargs: Dict[str, Any] = {}
        if device is not None:
            kwargs["device"] = torch.device(device)
        if dtype is not None:
            kwargs["dtype"] = device_dtype(parse_dtype(dtype), kwargs.get("device", self.model.device))
        self.model.to(**kwargs)
        return self

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def modalities(self) -> Tuple[str, ...]:
        return self.model.modalities

    def __call__(
        self,
        images: Union[ImageInput, Sequence[ImageInput]],
        modalities: Union[str, Sequence[str], None] = DEFAULT_MODALITIES,
        face_size: Optional[int] = None,
        batch_size: int = 1,
        output_height: Optional[int] = None,
        show_progress: bool = True,
        normalize_input: bool = False,
        stitching: str = "exact",
        seam_blend: bool = False,
    ) -> PagerOutput:
        """Run the model on panoramas; see the module docstring for accepted inputs.

        Args:
            modalities: which predictions to make. By default every loaded one; explicitly requested
                modalities that the model lacks are skipped with a warning (an error if none is left).
            face_size: cube face size in pixels (default: the checkpoint's, 768 for released models).
            batch_size: panoramas per forward pass (each is 6 faces).
            output_height: output ERP height (width = 2x); default: each input's own resolution.
            show_progress: tqdm progress bar over the batches.
            normalize_input: map float images whose values leave [0, 1] (float TIFF, HDR/EXR) linearly to
                [0, 1] with a warning, instead of refusing them (NaN/inf pixels are always refused).
            stitching: ``"exact"`` (default) or ``"reference"``: the original PaGeR code's ERP<->cube resampling
                (pytorch360convert 0.2.3), to reproduce its published numbers; output widths must then be
                multiples of 4. Recorded in each image's metadata.
            seam_blend: also predict on a cube turned by 45 deg and blend the two so that face borders do
                not show (about 2x the time; see :meth:`pager.model.Pager.predict`). Useful with checkpoints
                whose predictions step at the cube's face borders, such as the released ones.
        """
        from pager.geometry.cubemap import check_stitching

        from tqdm.auto import tqdm

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if output_height is not None and int(output_height) < 1:
            raise ValueError(f"output_height must be positive, got {output_height}")
        check_stitching(stitching, 2 * int(output_height) if output_height else None)
        wanted = iter_modalities(modalities) or self.model.modalities
        missing = [m for m in wanted if m not in self.model.modalities]
        if missing and modalities is not DEFAULT_MODALITIES:
            if len(missing) == len(wanted):
                raise ValueError(f"this model predicts {list(self.model.modalities)}; requested {list(wanted)}")
            warnings.warn(f"modalities {missing} are not loaded in this model; skipped", UserWarning, stacklevel=2)
        mods = [m for m in wanted if m in self.model.modalities]
        face_size = int(self.model.default_face_size if face_size is None else face_size)  # 0 is an error, not "default"
        if face_size <= 0:
            raise ValueError(f"face_size must be a positive number of pixels, got {face_size}")
        entries = _expand_inputs(images)
        n = len(entries)
        results: List[Dict[str, np.ndarray]] = [dict() for _ in range(n)]
        metadata: List[Dict[str, Any]] = [dict() for _ in range(n)]
        whole: Optional[Dict[str, np.ndarray]] = None  # the arrays of a batch that holds every input, in order
        bar = tqdm(total=n, desc="PaGeR", unit="pano", disable=not show_progress)
        for start in range(0, n, batch_size):
            chunk = list(range(start, min(n, start + batch_size)))
            decoded = {}
            for i in chunk:
                item, name = entries[i]
                # 8-bit images stay uint8: the model reads them in place (no float copy of a large panorama)
                rgb = load_rgb(item, name, normalize=normalize_input, keep_uint8=True)
                h, w = rgb.shape[:2]
                if w != 2 * h:
                    warnings.warn(f"{name}: {w}x{h} is not a 2:1 equirectangular panorama; it is read as a full sphere (stretched)", UserWarning, stacklevel=2)
                if not output_height:
                    try:
                        check_stitching(stitching, w)
                    except ValueError as exc:
                        raise ValueError(f"{name}: {exc}") from exc
                decoded[i] = rgb
            groups: Dict[Tuple[Tuple[int, int], Any], List[int]] = {}
            for i in chunk:
                groups.setdefault((decoded[i].shape[:2], decoded[i].dtype), []).append(i)
            for ((h, w), dtype), idx in groups.items():
                out_size = (int(output_height), 2 * int(output_height)) if output_height else (h, w)
                rgb8s = {i: self._rgb_uint8(decoded[i], out_size) for i in idx}
                arr = decoded[idx[0]][None] if len(idx) == 1 else np.stack([decoded[i] for i in idx])
                for i in idx:
                    decoded[i] = None  # the batch (or the single image) is all that is kept
                with warnings.catch_warnings():  # decoded images may be read-only arrays: only read from here on
                    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                    batch = torch.from_numpy(arr).permute(0, 3, 1, 2).to(self.model.device)
                if batch.dtype != torch.uint8:  # float32 in [0, 1], our own copy: mapped to [-1, 1] in place
                    batch = batch.mul_(2.0).sub_(1.0)
                del arr
                pred = self.model.predict(batch, modalities=mods, face_size=face_size, output_size=out_size,
                                          stitching=stitching, seam_blend=seam_blend)
                del batch
                arrays: Dict[str, np.ndarray] = {}
                if "depth" in pred:
                    arrays["depth"] = pred["depth"].float().cpu().numpy()
                    arrays["depth_mask"] = pred["depth_mask"].cpu().numpy()
                if "normals" in pred:  # channels-last storage: the permuted view is contiguous
                    arrays["normals"] = pred["normals"].float().permute(0, 2, 3, 1).cpu().numpy()
                    arrays["normals_mask"] = pred["normals_mask"].cpu().numpy()
                del pred
                masks = [arrays[f"{m}_mask"] for m in mods]
                if masks:
                    arrays["mask"] = masks[0].copy() if len(masks) == 1 else np.logical_and.reduce(masks)
                for k, i in enumerate(idx):
                    res = {key: value[k] for key, value in arrays.items()}
                    res["rgb"] = rgb8s.pop(i)
                    results[i] = res
                    metadata[i] = self._metadata(entries[i][1], (h, w), out_size, face_size, mods, stitching, seam_blend)
                if idx == list(range(n)):
                    whole = arrays
            bar.update(len(chunk))
        bar.close()
        return self._collect(results, metadata, mods, whole)

    @staticmethod
    def _rgb_uint8(rgb: np.ndarray, out_size: Tuple[int, int]) -> np.ndarray:
        """The input as uint8 ``[H, W, 3]`` at the output size (an 8-bit input as it is, no copy)."""
        rgb8 = rgb if rgb.dtype == np.uint8 else np.rint(rgb * 255.0).astype(np.uint8)
        if rgb8.shape[:2] != tuple(out_size):
            from PIL import Image

            rgb8 = np.asarray(Image.fromarray(np.ascontiguousarray(rgb8)).resize((out_size[1], out_size[0]), Image.BILINEAR))
        return rgb8

    def _metadata(self, name: str, in_size: Tuple[int, int], out_size: Tuple[int, int], face_size: int,
                  mods: Sequence[str], stitching: str = "exact", seam_blend: bool = False) -> Dict[str, Any]:
        meta: Dict[str, Any] = {"source": name, "input_size": tuple(in_size), "output_size": tuple(out_size),
                                "face_size": face_size, "modalities": list(mods), "stitching": stitching,
                                "seam_blend": bool(seam_blend)}
        for m in mods:
            cfg = self.model.configs[m]
            meta[f"{m}_checkpoint"] = cfg.name or cfg.source
        if "depth" in mods:
            cfg = self.model.configs["depth"]
            meta.update(depth_unit="m" if cfg.metric_depth else "relative", metric_depth=cfg.metric_depth,
                        log_scale=cfg.log_scale, min_depth=cfg.min_depth, max_depth=cfg.max_depth)
        if "normals" in mods:
            meta["normals_frame"] = "pager: x forward, y up, z right (right-handed)"
        return meta

    @staticmethod
    def _collect(results: List[Dict[str, np.ndarray]], metadata: List[Dict[str, Any]], mods: Sequence[str],
                 whole: Optional[Dict[str, np.ndarray]] = None) -> PagerOutput:
        """Stack the per-image results (no copy for one image, nor for one batch that holds every image:
        ``whole``, that batch's arrays)."""
        same = len({r["rgb"].shape for r in results}) == 1

        def gather(key: str):
            if not results or results[0].get(key) is None:
                return None
            if whole is not None and key in whole:
                return whole[key]
            arrays = [r[key] for r in results]
            if not same:
                return arrays
            return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)

        return PagerOutput(
            depth=gather("depth"), normals=gather("normals"), depth_mask=gather("depth_mask"),
            normals_mask=gather("normals_mask"), mask=gather("mask"), rgb=gather("rgb"), metadata=metadata,
        )
