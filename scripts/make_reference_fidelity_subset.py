"""Write the trimmed golden set ``tests/data/reference_fidelity/`` from the full one made with the original code.

Usage: ``python scripts/make_reference_fidelity_subset.py SOURCE_DIR [--out tests/data/reference_fidelity]``
(``SOURCE_DIR`` holds ``base/``, ``ck_<case>/``, ``cases.json`` and ``reference_outputs.safetensors``).

What is kept (the rest is derivable or redundant, see the README written beside the data):
- every checkpoint folder and the base; UNet weight files that are byte-identical between cases are stored once
  and the other cases get a relative symbolic link to them;
- ``input/erp`` and ``input/faces_fp64`` (the reference's float32 faces are exactly ``faces_fp64.float()``);
- one copy of the empty-prompt embedding per precision (identical for every case: one base);
- per case: ``fp32/latent``, ``fp32/unet_v``, ``fp64/unet_v`` (and ``fp32/pe_cubemap`` for uv) in full; the
  face images ``fp32/cube_out`` and ``fp64/decoded`` on a fixed pixel subset of every face
  (``meta/face_pixel_index``: every third row/column plus the last, i.e. both borders of every face);
- the ERP outputs of the reference's own stitching for one depth and one normals case, in full.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ERP_CASES = {"ref_written_depth": ("log_depth", "depth"), "ref_written_normals": ("normals_raw",)}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("--out", type=Path, default=Path("tests/data/reference_fidelity"))
    args = ap.parse_args()
    src, out = args.source, args.out
    if out.exists():
        raise SystemExit(f"{out} exists; remove it first")
    cases = json.loads((src / "cases.json").read_text())
    out.mkdir(parents=True)
    shutil.copytree(src / "base", out / "base")
    shutil.copy(src / "cases.json", out / "cases.json")
    owners: dict = {}
    for case, info in cases.items():
        ck = info["checkpoint"]
        (out / ck / "unet").mkdir(parents=True)
        shutil.copy(src / ck / "config.yaml", out / ck / "config.yaml")
        shutil.copy(src / ck / "unet" / "config.json", out / ck / "unet" / "config.json")
        weights = src / ck / "unet" / "diffusion_pytorch_model.safetensors"
        key = _digest(weights)
        target = out / ck / "unet" / weights.name
        if key in owners:
            os.symlink(os.path.relpath(owners[key], target.parent), target)
        else:
            shutil.copy(weights, target)
            owners[key] = target

    ref = load_file(str(src / "reference_outputs.safetensors"))
    face = ref["input/faces_fp64"].shape[-1]
    idx = sorted(set(range(0, face, 3)) | {face - 1})
    index = torch.tensor(idx, dtype=torch.long)
    if not torch.equal(ref["input/faces_fp32"], ref["input/faces_fp64"].float()):
        raise SystemExit("input/faces_fp32 is not faces_fp64.float(); keep it")
    keep = {"input/erp": ref["input/erp"], "input/faces_fp64": ref["input/faces_fp64"], "meta/face_pixel_index": index}
    for prec in ("fp32", "fp64"):
        embs = [ref[f"{c}/{prec}/empty_encoding"] for c in cases]
        if not all(torch.equal(embs[0], e) for e in embs):
            raise SystemExit(f"{prec} empty_encoding differs between cases; keep every copy")
        keep[f"empty_encoding/{prec}"] = embs[0]

    def sub(x: torch.Tensor) -> torch.Tensor:
        return x.index_select(-2, index).index_select(-1, index).contiguous()

    for c in cases:
        for k in ("latent", "unet_v", "pe_cubemap"):
            if f"{c}/fp32/{k}" in ref:
                keep[f"{c}/fp32/{k}"] = ref[f"{c}/fp32/{k}"]
        keep[f"{c}/fp64/unet_v"] = ref[f"{c}/fp64/unet_v"]
        keep[f"{c}/fp32/cube_out_subsampled"] = sub(ref[f"{c}/fp32/cube_out"])
        keep[f"{c}/fp64/decoded_subsampled"] = sub(ref[f"{c}/fp64/decoded"])
        for k in ERP_CASES.get(c, ()):
            keep[f"{c}/fp32/{k}"] = ref[f"{c}/fp32/{k}"]
    save_file(keep, str(out / "reference_outputs.safetensors"))


if __name__ == "__main__":
    main()
