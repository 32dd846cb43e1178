"""Shared helpers of the default-model training scripts (data loading into memory, encodings)."""
from __future__ import annotations

import logging
from typing import Dict, Tuple

import torch

logger = logging.getLogger(__name__)

#: Depth range of the default model (metres); log-scale encoding.
MIN_DEPTH = 0.1
MAX_DEPTH = 75.0


def augment_panorama(sample: Dict[str, torch.Tensor], gen: torch.Generator) -> Dict[str, torch.Tensor]:
    """A random horizontal roll (normals rotated with the scene) and, with probability 1/2, a mirror image
    (u -> 1 - u, i.e. theta -> -theta: the world z axis flips, so normals get z negated)."""
    from pager.data.dataset import roll_sample

    width = sample["rgb"].shape[-1]
    out = roll_sample({k: sample[k] for k in ("rgb", "depth", "mask", "normals")}, int(torch.randint(0, width, (1,), generator=gen)))
    if bool(torch.rand((), generator=gen) < 0.5):
        out = {k: v.flip(-1) for k, v in out.items()}
        out["normals"] = out["normals"] * torch.tensor([1.0, 1.0, -1.0]).view(3, 1, 1)
    return out


def load_cubemaps(data_root: str, split: str, num: int, face_size: int, seed: int = 0,
                  augment_seed: int | None = None) -> Dict[str, torch.Tensor]:
    """Load ``num`` panoramas of the ``Synthetic`` dataset under ``data_root`` as cube faces.

    Returns float16 tensors ``rgb [N, 6, 3, F, F]`` (in [-1, 1]), ``depth [N, 6, 3, F, F]`` (log-encoded in
    [-1, 1] with :data:`MIN_DEPTH`/:data:`MAX_DEPTH`, invalid = 1, i.e. far), ``normals [N, 6, 3, F, F]``
    (unit vectors, invalid = 0) and ``mask [N, 6, 1, F, F]`` (bool, valid depth). With ``augment_seed``, every
    panorama is randomly rolled and mirrored first (:func:`augment_panorama`).
    """
    from tqdm import tqdm

    from pager.data.registry import build_dataset
    from pager.geometry.cubemap import erp_to_cubemap
    from pager.geometry.depth_encoding import encode_depth

    ds = build_dataset("Synthetic", data_root, split)
    if num > len(ds):
        raise ValueError(f"asked for {num} panoramas but {data_root} split {split!r} has {len(ds)}")
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:num].tolist()
    out: Dict[str, list] = {"rgb": [], "depth": [], "normals": [], "mask": []}
    gen = torch.Generator().manual_seed(augment_seed) if augment_seed is not None else None
    for i in tqdm(order, desc=f"loading {split}", mininterval=10):
        s = ds[i]
        if gen is not None:
            s = augment_panorama(s, gen)
        mask = s["mask"].bool()
        d = encode_depth(s["depth"], MIN_DEPTH, MAX_DEPTH, log_scale=True)
        d = torch.where(mask, d, torch.ones_like(d)).expand(3, -1, -1)
        n = torch.where(mask, s["normals"], torch.zeros_like(s["normals"]))
        erp = torch.cat([s["rgb"], d, n, mask.float()], 0)[None]
        cube = erp_to_cubemap(erp, face_size, mode="bilinear")[0]
        out["rgb"].append(cube[:, 0:3].half())
        out["depth"].append(cube[:, 3:6].half())
        out["normals"].append(cube[:, 6:9].half())
        out["mask"].append(cube[:, 9:10] > 0.999)
    return {k: torch.stack(v) for k, v in out.items()}


def panoramic_vae(vae):
    """Apply the PaGeR wrappers (cube padding, panorama-wide GroupNorm/attention) to an AutoencoderKL in place."""
    from pager.geometry.cube_padding import convert_to_cube_padding
    from pager.model.panorama_layers import make_panorama_wide

    convert_to_cube_padding(vae)
    make_panorama_wide(vae, rope=False, rope_token_order="reference_vae", attention_backend="sdpa")
    return vae


def time_str(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
