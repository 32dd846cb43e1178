"""Stage 1 of the default model's UNet training: single-step regression in latent space (fast on a CPU).

The frozen VAE encodes the RGB cube faces and the target (log-encoded depth, or normals) once
(``encode``); the UNet is then trained, through the model's own code path (``Pager.predict_latent``: cube
padding, panorama-wide attention with RoPE, empty-prompt condition, t = T-1, v -> latent), to output the target
latent (MSE). Stage 2 (``train.py``, end-to-end in pixel space) starts from the checkpoint written here.

    python scripts/default_model/train_latent.py encode --base BASE --data_path DATA --num 400 --out LAT.pt
    python scripts/default_model/train_latent.py train --base BASE --latents LAT.pt --modality depth \
        --val_path HELDOUT --out CKPT --steps 1500
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from default_model.common import MAX_DEPTH, MIN_DEPTH, load_cubemaps, time_str  # noqa: E402

log = logging.getLogger("train_latent")


def model_config(modality: str, base: str, seed: int) -> dict:
    """The checkpoint YAML (``model:`` section decides loading) of a default-model UNet."""
    from pager.model.default_arch import DEFAULT_FACE_SIZE

    return {
        "seed": seed,
        "model": {
            "modality": modality, "pretrained_path": base, "checkpoint_path": None, "enable_xformers": False,
            "unet_positional_encoding": "RoPE", "vae_use_RoPE": False, "metric_depth": False, "log_scale": True,
            "min_depth": MIN_DEPTH, "max_depth": MAX_DEPTH, "normals_frame": "pager", "face_size": DEFAULT_FACE_SIZE,
        },
        "data": {"dataset": "Synthetic", "scenes": "both", "batch_size": 2},
    }


def build_pager(base: str, modality: str, unet_checkpoint=None):
    from pager.model import Pager
    from pager.model.default_arch import DEFAULT_FACE_SIZE

    return Pager.from_base(base, modality=modality, positional_encoding="RoPE", vae_use_RoPE=False,
                           metric_depth=False, log_scale=True, min_depth=MIN_DEPTH, max_depth=MAX_DEPTH,
                           normals_frame="pager", face_size=DEFAULT_FACE_SIZE, unet_checkpoint=unet_checkpoint)


def cmd_encode(args) -> None:
    from pager.model.default_arch import DEFAULT_FACE_SIZE

    pager = build_pager(args.base, "depth")
    data = load_cubemaps(args.data_path, "train", args.num, DEFAULT_FACE_SIZE, seed=args.seed,
                         augment_seed=args.augment_seed)
    n = data["rgb"].shape[0]
    lats = {"rgb": [], "depth": [], "normals": []}
    t0 = time.time()
    with torch.no_grad():
        for i in range(args.shard, n, args.num_shards):
            for k in lats:
                lats[k].append(pager.encode_rgb(data[k][i].float()).half())
            if i % 20 == 0:
                log.info("encoded %d/%d  %s", i, n, time_str(time.time() - t0))
    out = {k: torch.stack(v) for k, v in lats.items()}
    torch.save(out, args.out)
    log.info("wrote %s: %s", args.out, {k: tuple(v.shape) for k, v in out.items()})


@torch.no_grad()
def evaluate(pager, modality: str, val, face_size: int) -> dict:
    """Metrics of the model on held-out panoramas (depth: log_shift alignment)."""
    from pager.evaluation.metrics import align_prediction, average_over_images, depth_metrics, normals_metrics

    per = {}
    for s in val:
        out = pager.predict(s["rgb"][None], modalities=[modality], face_size=face_size)
        if modality == "depth":
            m = s["mask"] & (s["depth"] > 0)
            pred = align_prediction(out["depth"][:, None], s["depth"][None], m[None], "log_shift")
            res = depth_metrics(pred, s["depth"][None], m[None])
        else:
            m = s["mask"] & (s["normals"].norm(dim=0, keepdim=True) > 0.5)
            res = normals_metrics(out["normals"], s["normals"][None], m[None])
        for k, v in res.items():
            per.setdefault(k, []).append(v.reshape(-1))
    return average_over_images({k: torch.cat(v) for k, v in per.items()})


def load_val(path: str, num: int):
    from pager.data.registry import build_dataset

    ds = build_dataset("Synthetic", path, "test")
    return [ds[i] for i in range(min(num, len(ds)))]


def cmd_train(args) -> None:
    from pager.model.default_arch import DEFAULT_FACE_SIZE, build_default_unet
    from pager.training.checkpoint import write_model_files
    from pager.training.ema import EMAModel

    torch.manual_seed(args.seed)
    lat = [torch.load(p) for p in args.latents]
    rgb = torch.cat([d["rgb"] for d in lat])
    tgt = torch.cat([d[args.modality] for d in lat])
    n = rgb.shape[0]
    log.info("%d training panoramas (latents %s)", n, tuple(rgb.shape[1:]))
    pager = build_pager(args.base, args.modality, unet_checkpoint=args.init_checkpoint)
    unet = pager.unets[args.modality]
    if args.init_checkpoint is not None:
        log.info("continuing from %s", args.init_checkpoint)
    elif args.init_seed is not None:  # fresh weights of the default architecture (not the base's unet/)
        unet.load_state_dict(build_default_unet(args.init_seed).state_dict())
    unet.train()
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=1e-2)
    warm = max(1, int(0.03 * args.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (args.final_lr_ratio ** (s / args.steps)))
    ema = EMAModel(unet, decay=args.ema_decay)
    val = load_val(args.val_path, args.num_val)
    gen = torch.Generator().manual_seed(args.seed + 7)
    t0 = time.time()
    curve, losses = [], []
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, n, (args.batch_size,), generator=gen)
        x = rgb[idx].flatten(0, 1).float()
        y = tgt[idx].flatten(0, 1).float()
        pred = pager.predict_latent(args.modality, x)
        loss = torch.nn.functional.mse_loss(pred.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.step(unet)
        losses.append(float(loss))
        if step % args.log_every == 0:
            log.info("step %d/%d loss %.4f lr %.2e %s", step, args.steps, sum(losses[-args.log_every:]) / args.log_every,
                     sched.get_last_lr()[0], time_str(time.time() - t0))
        if step % args.val_every == 0 or step == args.steps:
            unet.eval()
            with ema.average_parameters(unet):
                metrics = evaluate(pager, args.modality, val, DEFAULT_FACE_SIZE)
            unet.train()
            keep = {k: metrics[k] for k in ("abs_rel", "delta1", "median", "mean", "within_11.25", "within_30") if k in metrics}
            curve.append({"step": step, "loss": sum(losses[-args.val_every:]) / len(losses[-args.val_every:]), **keep})
            log.info("VAL step %d: %s", step, json.dumps(keep))
            from pager.io_utils import atomic_directory

            with atomic_directory(args.out, overwrite=True) as tmp:
                write_model_files(tmp, unet, ema, model_config(args.modality, str(Path(args.base).resolve()), args.seed))
                (tmp / "latent_curve.json").write_text(json.dumps(curve, indent=1))
    log.info("done in %s -> %s", time_str(time.time() - t0), args.out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("encode")
    e.add_argument("--base", required=True)
    e.add_argument("--data_path", required=True)
    e.add_argument("--num", type=int, default=400)
    e.add_argument("--shard", type=int, default=0)
    e.add_argument("--num_shards", type=int, default=1)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--augment_seed", type=int, default=None, help="random roll + mirror of every panorama")
    e.add_argument("--out", required=True, type=Path)
    t = sub.add_parser("train")
    t.add_argument("--base", required=True)
    t.add_argument("--latents", required=True, nargs="+")
    t.add_argument("--modality", choices=("depth", "normals"), required=True)
    t.add_argument("--val_path", required=True)
    t.add_argument("--num_val", type=int, default=8)
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--batch_size", type=int, default=2)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--final_lr_ratio", type=float, default=0.1)
    t.add_argument("--ema_decay", type=float, default=0.995)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--init_seed", type=int, default=None)
    t.add_argument("--init_checkpoint", default=None, help="continue from a checkpoint written by this script")
    t.add_argument("--log_every", type=int, default=25)
    t.add_argument("--val_every", type=int, default=250)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    cmd_encode(args) if args.cmd == "encode" else cmd_train(args)


if __name__ == "__main__":
    main()
