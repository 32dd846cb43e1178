"""Package trained default-model components into ``pager/weights/default`` (released layout, fp16 safetensors).

Output::

    pager/weights/default/
        base/vae/{config.json, diffusion_pytorch_model.safetensors}     fp16
        base/scheduler/scheduler_config.json
        base/empty_prompt_embedding.safetensors                         fp16, {"embedding": [1, L, D]}
        depth/config.yaml    (model.pretrained_path: ../base)           + depth/unet/  (EMA weights, fp16)
        normals/config.yaml  (model.pretrained_path: ../base)           + normals/unet/
        README.md, metrics.json (held-out figures, filled in by the evaluation step)

``pager.model.loading.resolve_default_model`` finds ``<modality>/config.yaml``; a relative ``pretrained_path`` is
resolved against the checkpoint folder.

    python scripts/default_model/package.py --base RUN/base --depth CKPT_DEPTH --normals CKPT_NORMALS
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "pager" / "weights" / "default"


def _save_fp16(src_folder: Path, dst_folder: Path, cls_name: str) -> None:
    import diffusers

    cls = getattr(diffusers, cls_name)
    model = cls.from_pretrained(str(src_folder))
    model.to(torch.float16).save_pretrained(str(dst_folder), safe_serialization=True)


def package(base: Path, checkpoints: dict, out: Path = DEFAULT_OUT, variant: str = "EMA") -> Path:
    from omegaconf import OmegaConf
    from safetensors.torch import load_file, save_file

    from pager.model.loading import find_unet_folder, read_checkpoint_config

    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "base" / "scheduler").mkdir(parents=True)
    _save_fp16(base / "vae", tmp / "base" / "vae", "AutoencoderKL")
    shutil.copy(base / "scheduler" / "scheduler_config.json", tmp / "base" / "scheduler" / "scheduler_config.json")
    emb = load_file(str(base / "empty_prompt_embedding.safetensors"))["embedding"]
    save_file({"embedding": emb.to(torch.float16).contiguous()}, str(tmp / "base" / "empty_prompt_embedding.safetensors"))
    for modality, ckpt in checkpoints.items():
        ckpt = Path(ckpt)
        cfg = read_checkpoint_config(ckpt)
        if cfg["model"]["modality"] != modality:
            raise ValueError(f"{ckpt} is a {cfg['model']['modality']} checkpoint, expected {modality}")
        keep = {"seed": cfg.get("seed"), "model": dict(cfg["model"]), "data": {
            k: cfg.get("data", {}).get(k) for k in ("dataset", "scenes") if k in cfg.get("data", {})}}
        keep["model"]["pretrained_path"] = "../base"
        keep["model"]["checkpoint_path"] = None
        keep["model"]["trained_from"] = "procedural scenes (pager synth); see scripts/train_default.sh"
        (tmp / modality).mkdir()
        OmegaConf.save(OmegaConf.create(keep), tmp / modality / "config.yaml")
        _save_fp16(find_unet_folder(ckpt, variant), tmp / modality / "unet", "UNet2DConditionModel")
    readme = out / "README.md"
    if readme.is_file():
        shutil.copy(readme, tmp / "README.md")
    metrics = out / "metrics.json"
    if metrics.is_file():
        shutil.copy(metrics, tmp / "metrics.json")
    if out.exists():
        old = out.with_name(out.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, type=Path)
    p.add_argument("--depth", required=True, type=Path)
    p.add_argument("--normals", required=True, type=Path)
    p.add_argument("--variant", default="EMA", choices=("EMA", "original"))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    out = package(args.base, {"depth": args.depth, "normals": args.normals}, args.out, args.variant)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"packaged {out}: {total / 2**20:.2f} MiB")
    print(json.dumps({str(f.relative_to(out)): f.stat().st_size for f in sorted(out.rglob("*")) if f.is_file()}, indent=1))


if __name__ == "__main__":
    main()
