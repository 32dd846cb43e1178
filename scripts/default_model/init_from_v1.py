"""Start folder of the default model v2: the released v1 weights, with another cube-padding mode.

v2 is trained from v1 (``scripts/train_default.sh``, stages ``v2init`` and ``v2train``). This script takes
v1 exactly as it was committed (``git archive`` of ``pager/weights/default`` at ``--commit``, so it does not
depend on what the working tree ships now), and writes::

    <out>/base/       vae/, scheduler/, empty_prompt_embedding.safetensors   (v1's, unchanged)
    <out>/depth/      unet/ + config.yaml    (model.cube_padding: --cube_padding, pretrained_path: ../base)
    <out>/normals/    unet/ + config.yaml

Model-loading keys (``cube_padding`` among them) come from a checkpoint's own ``config.yaml`` and the trainer
never overrides them from the command line, so the padding mode of the continued training is set here.
The weights are stored in float32 (v1 is shipped in fp16; training keeps fp32 master weights).

    python scripts/default_model/init_from_v1.py --commit 2dffb75 --out RUN/v1_geometric --cube_padding geometric
"""
from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: the commit that shipped the default model v1 (pager/weights/default)
V1_COMMIT = "2dffb75371f0f02616ffe8db2a2bb693a6fe6033"
WEIGHTS = "pager/weights/default"


def extract_v1(commit: str, dest: Path) -> Path:
    """``pager/weights/default`` at ``commit`` unpacked under ``dest``; returns the unpacked folder."""
    try:
        data = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit, WEIGHTS],
                              check=True, capture_output=True).stdout
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"--commit {commit}: git archive failed: {exc.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return dest / WEIGHTS


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--commit", default=V1_COMMIT, help="git commit holding v1 in pager/weights/default")
    p.add_argument("--out", required=True, type=Path, help="output folder (must not exist)")
    p.add_argument("--cube_padding", default="geometric", choices=("reference", "geometric"))
    args = p.parse_args(argv)
    if args.out.exists():
        raise SystemExit(f"--out {args.out} already exists")

    import diffusers
    import torch
    from omegaconf import OmegaConf
    from safetensors.torch import load_file, save_file

    tmp = args.out.with_name(args.out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    src = extract_v1(args.commit, tmp / "_git")
    out = tmp / "out"
    (out / "base").mkdir(parents=True)
    shutil.copytree(src / "base" / "scheduler", out / "base" / "scheduler")
    diffusers.AutoencoderKL.from_pretrained(str(src / "base" / "vae"), torch_dtype=torch.float32).save_pretrained(
        str(out / "base" / "vae"), safe_serialization=True)
    emb = load_file(str(src / "base" / "empty_prompt_embedding.safetensors"))
    save_file({k: v.float().contiguous() for k, v in emb.items()}, str(out / "base" / "empty_prompt_embedding.safetensors"))
    for modality in ("depth", "normals"):
        cfg = OmegaConf.load(src / modality / "config.yaml")
        cfg.model.cube_padding = args.cube_padding
        cfg.model.pretrained_path = "../base"
        cfg.model.trained_from = f"default model v1 (git {args.commit[:10]}), cube_padding set to {args.cube_padding}"
        (out / modality).mkdir()
        OmegaConf.save(cfg, out / modality / "config.yaml")
        diffusers.UNet2DConditionModel.from_pretrained(str(src / modality / "unet"), torch_dtype=torch.float32).save_pretrained(
            str(out / modality / "unet"), safe_serialization=True)
    out.rename(args.out)
    shutil.rmtree(tmp)
    print(f"wrote {args.out} (v1 at {args.commit[:10]}, cube_padding {args.cube_padding})")


if __name__ == "__main__":
    main()
