"""Pre-train the small AutoencoderKL of the default model as an autoencoder on procedural scenes.

The VAE must encode RGB panoramas and decode depth / normals, so it is trained to reconstruct cube faces of
three kinds of 3-channel images: RGB, log-encoded depth (replicated on 3 channels) and normals; loss
L1 + a small KL term. It is trained with the same wrappers the model uses (cube padding, panorama-wide
GroupNorm and attention), on whole cubemaps (6 faces). Afterwards ``scaling_factor`` is set to 1 / std of the
latents (as SD does), and the VAE is saved (diffusers folder, safetensors).

    python scripts/pretrain_default_vae.py --data_path /work/data/root --out /work/default_run/vae
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_model.common import load_cubemaps, panoramic_vae, time_str  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_path", required=True, help="folder holding Synthetic/ (pager synth output)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--num_panoramas", type=int, default=200)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--face_size", type=int, default=64, help="training face size (convolutions are size-agnostic)")
    p.add_argument("--final_face_size", type=int, default=128, help="face size of the last --final_steps steps")
    p.add_argument("--final_steps", type=int, default=60)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--kl_weight", type=float, default=1e-6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log_every", type=int, default=10)
    p.add_argument("--init", type=Path, default=None, help="continue from this trained AutoencoderKL folder")
    p.add_argument("--decoder_only", action="store_true",
                   help="train only the decoder on the frozen encoder's latents (mode); keeps the latent space "
                        "(and scaling_factor) of --init, so latents computed with it stay valid")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("pretrain_vae")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    from pager.model.default_arch import build_default_vae

    full = load_cubemaps(args.data_path, "train", args.num_panoramas, args.final_face_size, seed=args.seed)
    data = {args.final_face_size: full}
    if args.face_size != args.final_face_size:  # area-downsampled copies of the same faces
        data[args.face_size] = {
            k: torch.nn.functional.interpolate(v.flatten(0, 1).float(), size=(args.face_size,) * 2, mode="area")
            .unflatten(0, v.shape[:2]).half() for k, v in full.items() if k != "mask"}
    if args.init is not None:
        from diffusers import AutoencoderKL

        vae = panoramic_vae(AutoencoderKL.from_pretrained(str(args.init)))
    else:
        vae = panoramic_vae(build_default_vae(args.seed))
    if args.decoder_only and args.init is None:
        raise ValueError("--decoder_only needs --init")
    vae.train()
    if args.decoder_only:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
        vae.encoder.eval()
    params = [q for q in vae.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * (0.1 ** (s / max(args.steps, 1))))
    gen = torch.Generator().manual_seed(args.seed + 1)
    t0 = time.time()
    curve = []
    for step in range(args.steps):
        fs = args.final_face_size if step >= args.steps - args.final_steps else args.face_size
        d = data[fs]
        idx = torch.randint(0, d["rgb"].shape[0], (3,), generator=gen)
        # one panorama of each kind: RGB, depth, normals -> [18, 3, F, F]
        x = torch.cat([d["rgb"][idx[0]], d["depth"][idx[1]], d["normals"][idx[2]]], 0).float()
        with torch.set_grad_enabled(not args.decoder_only):
            post = vae.encode(x).latent_dist
            z = post.mode() if args.decoder_only else post.sample(generator=None)
        rec = vae.decode(z).sample
        err = (rec - x).abs().flatten(1).mean(1).view(3, 6).mean(1)  # per kind
        l1 = err.mean()
        kl = post.kl().mean() / x[0].numel()
        loss = l1 if args.decoder_only else l1 + args.kl_weight * kl * x[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        curve.append([step] + [float(e) for e in err.detach()])
        if step % args.log_every == 0 or step == args.steps - 1:
            log.info("step %d/%d face %d  L1 rgb %.4f depth %.4f normals %.4f  kl/px %.3f  lr %.2e  %s",
                     step, args.steps, fs, err[0], err[1], err[2], float(kl), sched.get_last_lr()[0],
                     time_str(time.time() - t0))
    # latent scale: 1 / std of the RGB latents (the UNet's inputs) at the final face size
    vae.eval()
    with torch.no_grad():
        d = data[args.final_face_size]
        n = min(8, d["rgb"].shape[0])
        lat = torch.cat([vae.encode(d["rgb"][i].float()).latent_dist.mode() for i in range(n)]
                        + [vae.encode(d["depth"][i].float()).latent_dist.mode() for i in range(n)])
        std = float(lat.std())
        if args.decoder_only:  # the latent space is unchanged: keep its scale
            std = 1.0 / float(vae.config.scaling_factor)
        vae.register_to_config(scaling_factor=1.0 / std)
        errs = {k: float(torch.stack([(vae.decode(vae.encode(d[k][i].float()).latent_dist.mode()).sample
                                        - d[k][i].float()).abs().mean() for i in range(n)]).mean())
                for k in ("rgb", "depth", "normals")}
    log.info("latent std %.4f -> scaling_factor %.4f; final reconstruction L1 (mode, face %d): %s",
             std, 1.0 / std, args.final_face_size, errs)
    args.out.mkdir(parents=True, exist_ok=True)
    vae.save_pretrained(str(args.out), safe_serialization=True)
    (args.out / "pretrain_log.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                             "curve_l1_rgb_depth_normals": curve,
                                                             "final_l1": errs, "scaling_factor": 1.0 / std}))
    log.info("saved %s", args.out)


if __name__ == "__main__":
    main()
