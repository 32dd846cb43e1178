"""Write the base folder of the default model (what its checkpoints' ``pretrained_path`` points at).

Layout (the one ``pager.model.loading.load_base`` reads)::

    vae/config.json, vae/diffusion_pytorch_model.safetensors
    unet/config.json, unet/diffusion_pytorch_model.safetensors   (random init for training; not shipped)
    scheduler/scheduler_config.json                              (SD-2 v-prediction, zero terminal SNR)
    empty_prompt_embedding.safetensors                           ({"embedding": [1, L, D]}, fixed random)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

import torch


def write_base(out: Path, vae=None, seed: int = 0, with_unet: bool = True, fp16: bool = False) -> Path:
    """Write a base folder; ``vae`` defaults to a random default-architecture VAE."""
    from safetensors.torch import save_file

    from pager.model.default_arch import (DEFAULT_CROSS_ATTENTION_DIM, DEFAULT_PROMPT_TOKENS, build_default_unet,
                                          build_default_vae)
    from pager.model.tiny import SCHEDULER_CONFIG

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if vae is None:
        vae = build_default_vae(seed)
    vae = vae.to(torch.float16) if fp16 else vae
    vae.save_pretrained(str(out / "vae"), safe_serialization=True)
    if with_unet:
        build_default_unet(seed + 1).save_pretrained(str(out / "unet"), safe_serialization=True)
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2))
    g = torch.Generator().manual_seed(seed + 2)
    emb = torch.randn(1, DEFAULT_PROMPT_TOKENS, DEFAULT_CROSS_ATTENTION_DIM, generator=g)
    save_file({"embedding": emb.to(torch.float16) if fp16 else emb}, str(out / "empty_prompt_embedding.safetensors"))
    return out


def main(argv: Optional[list] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--vae", type=Path, default=None, help="a trained AutoencoderKL folder (default: random)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    vae = None
    if args.vae is not None:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(str(args.vae))
    write_base(args.out, vae=vae, seed=args.seed)
    print(f"wrote base folder {args.out}")


if __name__ == "__main__":
    main()
