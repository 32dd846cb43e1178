"""Proof that training learns: a tiny random PaGeR model trained on procedural panoramas.

Renders a small procedural data set (``pager.data.synthetic``), builds a tiny random base model
(``pager.model.tiny``), measures the validation AbsRel of the untrained model, trains it with the real
training loop (``pager.training.trainer.train``, the same code as ``train.py``) and prints the
validation AbsRel of the trained model (EMA weights) next to the one before training.

    python scripts/train_tiny_proof.py --out /tmp/pager_proof     # 300 steps, about 3 minutes of one CPU core

Everything runs on the CPU in a few minutes; only the output folder is written.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="pager_tiny_proof", help="work folder (data set, base model, runs)")
    p.add_argument("--steps", type=int, default=300, help="optimisation steps")
    p.add_argument("--scenes", type=int, default=120, help="procedural scenes to render (80 %% train, 20 %% validation)")
    p.add_argument("--scene_type", default="both", choices=("indoor", "outdoor", "both"))
    p.add_argument("--height", type=int, default=64, help="ERP height of the panoramas (width = 2 x height)")
    p.add_argument("--face_size", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--only_attention", action="store_true", help="train only the attention layers (default: the whole UNet)")
    p.add_argument("--positional_encoding", default="uv", choices=("uv", "RoPE", "none"))
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for these tiny tensors on a shared CPU)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _constant_baseline(loader) -> float:
    """AbsRel of a constant prediction, log-shift aligned to each validation panorama (a floor to beat)."""
    import torch

    from pager.evaluation.metrics import align_prediction, depth_metrics

    values = []
    for batch in loader:
        gt, mask = batch["depth"].float(), batch["eval_mask"].bool()
        pred = align_prediction(torch.ones_like(gt), gt, mask, "log_shift")
        values.append(depth_metrics(pred, gt, mask)["abs_rel"])
    return float(torch.cat(values).nanmean())


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    from pager.config import load_config, merge_overrides
    from pager.data.registry import build_dataset
    from pager.data.synthetic.writer import write_dataset
    from pager.model import Pager
    from pager.model.tiny import build_tiny_base
    from pager.training.trainer import evaluate_model, train

    out = Path(args.out).resolve()
    data = out / "data"
    if not (data / "Synthetic" / "meta.json").is_file():
        t = time.perf_counter()
        write_dataset(data / "Synthetic", num=args.scenes, height=args.height, scenes=args.scene_type, seed=args.seed,
                      splits=(0.8, 0.2, 0.0), progress=False)
        print(f"rendered {args.scenes} procedural scenes at {args.height}x{2 * args.height} in {time.perf_counter() - t:.1f} s")
    base = out / "base"
    if not (base / "vae" / "config.json").is_file():
        build_tiny_base(base, seed=args.seed, face_size=args.face_size)

    val = build_dataset("Synthetic", data, "val", scenes=args.scene_type)
    train_ds = build_dataset("Synthetic", data, "train", scenes=args.scene_type)
    min_depth, max_depth = val.min_depth, val.max_depth
    loader = torch.utils.data.DataLoader(val, batch_size=4, shuffle=False)

    torch.manual_seed(args.seed)
    before_model = Pager.from_base(str(base), modality="depth", positional_encoding=args.positional_encoding, min_depth=min_depth,
                                   max_depth=max_depth, face_size=args.face_size)
    before_model.eval()
    before = evaluate_model(before_model, "depth", loader, args.face_size, alignment="log_shift")
    del before_model
    constant = _constant_baseline(loader)

    run_name = f"proof-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = merge_overrides(load_config(None), {
        "seed": args.seed,
        "model.pretrained_path": str(base),
        "model.face_size": args.face_size,
        "model.unet_positional_encoding": args.positional_encoding,
        "model.max_depth": max_depth,
        "data.data_path": str(data),
        "data.dataset": "Synthetic",
        "data.scenes": args.scene_type,
        "data.batch_size": args.batch_size,
        "training.max_train_steps": args.steps,
        "training.only_train_attention_layers": bool(args.only_attention),
        "training.gradient_checkpointing": False,
        "training.num_workers": 0,
        "training.use_EMA": True,
        "optimization.learning_rate": args.learning_rate,
        "validation.run_validation": True,
        "validation.run_tiny_validation": False,
        "logging.save_path": str(out / "runs"),
        "logging.run_name": run_name,
        "logging.img_report_frequency": max(args.steps // 4, 1),
        "logging.save_frequency": 1000000,
    })
    t = time.perf_counter()
    result = train(cfg)
    minutes = (time.perf_counter() - t) / 60.0
    after = result.val_metrics
    print(f"train panoramas: {len(train_ds)}, validation panoramas: {len(val)}, steps: {result.global_step}, "
          f"batch {args.batch_size}, {minutes:.1f} min")
    print("validation (log-shift aligned), before -> after training:")
    for key in ("abs_rel", "rmse", "delta1"):
        print(f"  {key:8s} {before[f'val/{key}']:.4f} -> {after[f'val/{key}']:.4f}")
    print(f"  (reference: a constant depth map, log-shift aligned, has AbsRel {constant:.4f})")
    print(f"checkpoint: {result.checkpoint_dir}")
    ok = after["val/abs_rel"] < 0.8 * before["val/abs_rel"]
    print("AbsRel dropped clearly" if ok else "AbsRel did NOT drop clearly")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
