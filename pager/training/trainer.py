"""The Accelerate training loop of PaGeR (end-to-end fine-tuning in pixel space).

One optimisation step, for a batch of ``B`` ERP panoramas per process::

    rgb [B,3,H,W] --(roll augmentation)--> erp_to_cubemap --> faces [B,6,3,F,F]
    --Pager.forward_faces (frozen VAE encoder, trained UNet, frozen VAE decoder; differentiable)--> [B,6,3,F,F]
    depth: mean of the 3 channels, aligned to the encoded target (log shift / LS scale+shift / none for metric),
           L1 (+ invalid-pixel weight) + gradient L1 + normals consistency;   normals: 1 - cos
    --accelerator.backward--> clip --> AdamW --> LR schedule --> EMA

Run folder ``<save_path>/<run_name>/`` (``run_name`` defaults to the start time)::

    config.yaml               the resolved config of the run
    logs/                     tensorboard (or wandb) logs
    images/                   image reports: rgb | prediction | ground truth | error
    checkpoint-last/          released layout (original/, EMA/, config.yaml) + training_checkpoint/ (resumable state)
    checkpoint-best/          released layout, best full-validation score so far

Both are symbolic links to ``checkpoint-*.step-N/`` folders, switched atomically by each save (see
:mod:`pager.training.checkpoint`). Resuming (``--resume_path <run>/checkpoint-last/training_checkpoint``,
or the run / checkpoint folder) restores weights, optimiser, LR schedule, EMA, RNG states, the data
position (batches already seen in the current epoch are skipped without being loaded) and the step
counter, so an interrupted run reaches the same weights as an uninterrupted one; a run interrupted before
its first complete checkpoint starts again from step 0. Nothing is unpickled beyond weights-only loading
unless ``allow_pickle`` (``train.py --allow_pickle``).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from omegaconf import DictConfig, OmegaConf

from pager.training.checkpoint import (
    CONFIG_NAME,
    TRAINING_STATE_DIR,
    TrainingProgress,
    check_training_state,
    find_resume_point,
    load_training_state,
    publish_checkpoint,
    resolve_checkpoint,
    save_training_state,
    write_model_files,
)
from pager.training.ema import EMAModel
from pager.training.losses import align_relative_depth, depth_losses, normals_losses
from pager.training.schedule import ExponentialWarmupSchedule, build_lr_scheduler

logger = logging.getLogger(__name__)

__all__ = [
    "TrainResult",
    "train",
    "select_trainable_parameters",
    "load_training_config",
    "resolve_validation_alignment",
    "evaluate_model",
    "report_mosaic",
]

FACES = 6


@dataclass
class TrainResult:
    """What a call of :func:`train` did."""

    run_dir: Path
    global_step: int
    epoch: int
    checkpoint_dir: Optional[Path]
    val_metrics: Dict[str, float] = field(default_factory=dict)
    skipped: int = 0  # bad samples skipped (data.skip_bad_samples)
    tiny_val_metrics: Dict[str, float] = field(default_factory=dict)
    last_losses: Dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False


# -------------------------------------------------------------------------------------------------
# configuration helpers
# -------------------------------------------------------------------------------------------------

def load_training_config(
    config_path: Optional[str], overrides: Mapping[str, Any], resume_path: Optional[str] = None
) -> DictConfig:
    """The run config: ``config_path`` (or the packaged ``base.yaml``) with ``overrides`` applied.

    When resuming, the config stored with the training checkpoint replaces the YAML file (the run must
    continue with the settings it started with); command-line overrides still apply on top.
    """
    from pager.config import load_config, merge_overrides

    if resume_path:
        stored = find_resume_point(resume_path).config_path
        if not stored.is_file():
            raise FileNotFoundError(f"resume_path {resume_path!r}: {stored} (the run's config) is missing")
        if config_path:
            logger.info("resuming: the config stored with the checkpoint (%s) replaces %s", stored, config_path)
        base = load_config(stored)
    else:
        base = load_config(config_path)
    cfg = merge_overrides(base, dict(overrides))
    if resume_path:
        OmegaConf.update(cfg, "training.resume_path", str(resume_path), merge=False)
    return cfg


def resolve_validation_alignment(cfg_value: Optional[str], metric_depth: bool, log_scale: bool) -> str:
    """``auto`` -> ``metric`` (metric models), ``log_shift`` (log-scale relative), ``scale_and_shift`` (linear)."""
    if cfg_value in (None, "", "auto"):
        if metric_depth:
            return "metric"
        return "log_shift" if log_scale else "scale_and_shift"
    return str(cfg_value)


def select_trainable_parameters(unet: torch.nn.Module, only_attention: bool, positional_encoding: str) -> List[torch.nn.Parameter]:
    """Set ``requires_grad`` on the UNet and return the trained parameters.

    ``only_attention``: the transformer blocks (attention + feed-forward of every transformer layer), plus
    ``conv_in`` when the ``uv`` encoding added new input channels; otherwise every parameter.
    """
    unet.requires_grad_(False)
    params = []
    for name, p in unet.named_parameters():
        train_it = (not only_attention) or ("transformer_blocks" in name) or (positional_encoding == "uv" and name.startswith("conv_in."))
        if train_it:
            p.requires_grad_(True)
            params.append(p)
    if not params:
        raise ValueError("only_train_attention_layers: the UNet has no 'transformer_blocks' parameter to train")
    return params


def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    value = OmegaConf.select(cfg, key, default=default)
    return default if value is None else value


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (int, float, str, bool)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


class _TrainedUNet(torch.nn.Module):
    """What Accelerate prepares (DDP-wraps): the trained UNet as its only sub-module.

    Its forward runs the full differentiable :meth:`Pager.forward_faces`, so DDP sees every use of the
    UNet's parameters while the frozen VAE stays outside the wrapper (not synchronised, not checkpointed).
    """

    def __init__(self, pager: torch.nn.Module, modality: str) -> None:
        super().__init__()
        self.unet = pager.unets[modality]
        self.modality = modality
        object.__setattr__(self, "_pager", pager)  # not a registered sub-module

    def forward(self, rgb_faces: torch.Tensor) -> torch.Tensor:
        return self._pager.forward_faces(rgb_faces, self.modality)


def _cpu_only() -> bool:
    """True when no accelerator is usable (or ``ACCELERATE_USE_CPU`` asks for the CPU).

    Accelerate only sets up multi-process CPU training (gloo) when told to use the CPU, so on a machine
    without GPU, ``accelerate launch --multi_gpu --num_processes N`` / ``torchrun`` still train with N processes.
    """
    if os.environ.get("ACCELERATE_USE_CPU", "").strip().lower() in ("1", "true", "yes"):
        return True
    if torch.cuda.is_available():
        return False
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return False
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and hasattr(xpu, "is_available") and xpu.is_available():
        return False
    return True


def _stable_seed(*parts: int) -> int:
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


# -------------------------------------------------------------------------------------------------
# the trainer
# -------------------------------------------------------------------------------------------------

class Trainer:
    """Holds the state of one training run; use :func:`train`."""

    def __init__(self, cfg: DictConfig, overrides: Optional[Mapping[str, Any]] = None, allow_pickle: bool = False) -> None:
        self.cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        self.overrides = dict(overrides or {})
        self.allow_pickle = bool(allow_pickle)
        self.modality = "normals" if _get(self.cfg, "model.modality", "depth") in ("normal", "normals") else "depth"
        self.progress = TrainingProgress()

    # ---------------------------------------------------------------------------------- setup
    def _check_config(self) -> None:
        cfg = self.cfg
        if self.modality not in ("depth", "normals"):
            raise ValueError(f"modality must be 'depth' or 'normals', got {cfg.model.modality!r}")
        if int(_get(cfg, "data.batch_size", 1)) < 1:
            raise ValueError(f"batch_size must be >= 1, got {cfg.data.batch_size}")
        if int(_get(cfg, "training.gradient_accumulation_steps", 1)) < 1:
            raise ValueError("gradient_accumulation_steps must be >= 1")
        report_to = str(_get(cfg, "logging.report_to", "tensorboard"))
        if report_to not in ("tensorboard", "wandb", "none"):
            raise ValueError(f"report_to must be 'tensorboard', 'wandb' or 'none', got {report_to!r}")
        mp = str(_get(cfg, "training.mixed_precision", "no"))
        if mp not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', got {mp!r}")
        for key in ("loss_report_frequency", "img_report_frequency", "save_frequency"):
            value = _get(cfg, f"logging.{key}", 1)
            if int(value) < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        if int(_get(cfg, "validation.tiny_val_frequency", 1)) < 1:
            raise ValueError("tiny_val_frequency must be >= 1")

    def _make_accelerator(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

        cfg = self.cfg
        report_to = str(_get(cfg, "logging.report_to", "tensorboard"))
        if report_to == "wandb":
            from diffusers.utils import is_wandb_available

            if not is_wandb_available():
                logger.warning("report_to=wandb but wandb is not installed; logging to tensorboard instead")
                report_to = "tensorboard"
        self.report_to = report_to
        self.accelerator = Accelerator(
            cpu=_cpu_only(),
            gradient_accumulation_steps=int(_get(cfg, "training.gradient_accumulation_steps", 1)),
            mixed_precision=str(_get(cfg, "training.mixed_precision", "no")),
            log_with=None if report_to == "none" else report_to,
            project_config=ProjectConfiguration(
                project_dir=str(self.run_dir), logging_dir=str(self.run_dir / str(_get(cfg, "logging.log_path", "logs")))
            ),
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=int(_get(cfg, "seed", 42))),
        )

    def _resolve_run_dir(self) -> Path:
        """The run folder, identical on every process (a new run refuses an existing, non-empty folder)."""
        from accelerate import PartialState
        from accelerate.utils import broadcast_object_list

        cfg = self.cfg
        state = PartialState(cpu=_cpu_only())
        resume = _get(cfg, "training.resume_path")
        self.state_dir: Optional[Path] = None
        if resume:
            point = find_resume_point(resume)
            self.state_dir, run_dir = point.state_dir, point.run_dir
            if self.state_dir is not None:  # refuse unsafe pickles before any work is done
                check_training_state(self.state_dir, self.allow_pickle)
        else:
            self.state_dir = None
            name = _get(cfg, "logging.run_name") or datetime.now(timezone.utc).strftime("%Y-%m-%d-%H-%M-%S")
            run_dir = Path(str(_get(cfg, "logging.save_path", "checkpoints/"))) / str(name)
        holder = [str(run_dir.resolve())]
        if state.num_processes > 1:
            broadcast_object_list(holder)
        run_dir = Path(holder[0])
        from pager.io_utils import check_writable_folder

        check_writable_folder(run_dir, "run folder")  # before any data set or model is loaded
        if not resume and run_dir.is_dir() and any(run_dir.iterdir()):
            raise FileExistsError(
                f"run folder {run_dir} already exists and is not empty; choose another --run_name / --save_path, "
                f"or continue it with --resume_path {run_dir}"
            )
        state.wait_for_everyone()
        return run_dir

    def _build_datasets(self) -> None:
        from pager.data.registry import build_dataset

        cfg = self.cfg
        common = dict(
            name=str(cfg.data.dataset), data_path=str(cfg.data.data_path), scenes=str(_get(cfg, "data.scenes", "both")),
            debug=bool(_get(cfg, "debug", False)), height=_get(cfg, "data.height"),
            skip_bad_samples=bool(_get(cfg, "data.skip_bad_samples", False)),
        )
        self.train_ds = build_dataset(split="train", augment=False, **common)
        self.val_ds = build_dataset(split="val", **common) if bool(_get(cfg, "validation.run_validation", False)) else None
        self.tiny_val_ds = build_dataset(split="tiny_val", **common) if bool(_get(cfg, "validation.run_tiny_validation", False)) else None
        if not getattr(type(self.train_ds), "HAS_GROUND_TRUTH", True):
            raise ValueError(f"dataset {cfg.data.dataset!r} has no ground truth: it cannot be used for training")
        if self.modality == "normals" and not type(self.train_ds).HAS_NORMALS:
            raise ValueError(f"dataset {cfg.data.dataset!r} has no ground-truth normals: it cannot train a normals model")

    def _resolve_model_config(self) -> None:
        """Fill ``cfg.model`` completely (a checkpoint's own config decides its model-loading keys)."""
        from pager.config import apply_checkpoint_model_config
        from pager.model.loading import ModalityConfig, read_checkpoint_config, resolve_folder

        cfg = self.cfg
        ckpt = _get(cfg, "model.checkpoint_path")
        self.ckpt_folder: Optional[Path] = None
        if ckpt and str(ckpt).strip().rstrip("/") == "default":  # the embedded model: its UNet of this modality
            ckpt = f"default/{self.modality}"
            logger.info("checkpoint_path 'default': fine-tuning the embedded default model's %s UNet", self.modality)
        if ckpt:
            folder = resolve_folder(str(ckpt), "checkpoint_path", allow_pickle=self.allow_pickle)
            raw = read_checkpoint_config(folder)
            mc = ModalityConfig.from_yaml_config(raw)
            ckpt_model = dict(raw.get("model", {}) or {})
            ckpt_model.update(
                modality=mc.modality, unet_positional_encoding=mc.positional_encoding, vae_use_RoPE=mc.vae_use_RoPE,
                metric_depth=mc.metric_depth, log_scale=mc.log_scale, min_depth=mc.min_depth, max_depth=mc.max_depth,
                normals_frame=mc.normals_frame, cube_padding=mc.cube_padding,
            )
            base = str(ckpt_model.get("pretrained_path") or "")
            if base and not os.path.isabs(base) and (folder / base).is_dir():
                ckpt_model["pretrained_path"] = str((folder / base).resolve())
            self.cfg = apply_checkpoint_model_config(cfg, ckpt_model, self.overrides)
            if "face_size" in ckpt_model and "model.face_size" not in self.overrides:
                self.cfg.model.face_size = int(ckpt_model["face_size"])
            self.ckpt_folder = folder
            cfg = self.cfg
            if cfg.model.modality in ("normal",):
                cfg.model.modality = "normals"
            self.modality = str(cfg.model.modality)
        m = cfg.model
        if _get(cfg, "model.max_depth") is None:
            m.max_depth = float(self.train_ds.max_depth)
        if _get(cfg, "model.min_depth") is None:
            m.min_depth = float(self.train_ds.min_depth)
        if _get(cfg, "model.normals_frame") is None:
            m.normals_frame = "pager"
        if _get(cfg, "model.cube_padding") is None:  # new models: geometric (a checkpoint's own value wins above)
            m.cube_padding = "geometric"
        if _get(cfg, "model.unet_positional_encoding") in (None, False):
            m.unet_positional_encoding = "none"
        pretrained = str(m.pretrained_path)
        if Path(pretrained).expanduser().is_dir():
            m.pretrained_path = str(Path(pretrained).expanduser().resolve())
        if not 0 < float(m.min_depth) < float(m.max_depth):
            raise ValueError(f"need 0 < min_depth < max_depth, got {m.min_depth}, {m.max_depth}")

    def _build_model(self) -> None:
        from pager.model import Pager

        m = self.cfg.model
        self.pager = Pager.from_base(
            str(m.pretrained_path),
            modality=self.modality,
            positional_encoding=str(m.unet_positional_encoding),
            vae_use_RoPE=m.vae_use_RoPE,
            metric_depth=bool(m.metric_depth),
            log_scale=bool(m.log_scale),
            min_depth=float(m.min_depth),
            max_depth=float(m.max_depth),
            normals_frame=str(m.normals_frame),
            face_size=int(m.face_size),
            cube_padding_mode=str(m.cube_padding),
            unet_checkpoint=str(self.ckpt_folder) if self.ckpt_folder is not None else None,
            enable_xformers=bool(_get(self.cfg, "model.enable_xformers", False)),
            allow_pickle=self.allow_pickle,
        )
        self.face_size = int(m.face_size)
        if self.face_size % self.pager.face_multiple:
            raise ValueError(f"face_size {self.face_size} must be a multiple of {self.pager.face_multiple} for this model")
        self.model_cfg = self.pager.configs[self.modality]
        self.unet = self.pager.unets[self.modality]
        self._saturation: Optional[float] = None
        if self.modality == "depth" and float(_get(self.cfg, "loss.invalid_saturation_weight", 0.0)) > 0.0:
            from pager.geometry.depth_encoding import saturation_value

            mc = self.model_cfg
            if not (mc.metric_depth or mc.log_scale):
                raise ValueError("invalid_saturation_weight > 0 needs a metric or log-scale depth model: an affine "
                                 "relative model has no fixed far end of its range to saturate at")
            self._saturation = saturation_value(mc.min_depth, mc.max_depth, log_scale=mc.log_scale)

    # ---------------------------------------------------------------------------------- batches
    def _augment(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        """Random horizontal roll per panorama (normals rotated to match), drawn from a generator seeded by
        (seed, epoch, batch position, process): reproducible, and identical after a resume."""
        from pager.data.dataset import roll_sample

        width = batch["rgb"].shape[-1]
        gen = torch.Generator().manual_seed(
            _stable_seed(int(_get(self.cfg, "seed", 42)), self.progress.epoch, self.progress.batches_in_epoch,
                         self.accelerator.process_index)
        )
        shifts = torch.randint(0, width, (batch["rgb"].shape[0],), generator=gen).tolist()
        keys = [k for k in ("rgb", "depth", "mask", "eval_mask", "normals") if k in batch and torch.is_tensor(batch[k])]
        rolled = [roll_sample({k: batch[k][i] for k in keys}, s) for i, s in enumerate(shifts)]
        out = dict(batch)
        for k in keys:
            out[k] = torch.stack([r[k] for r in rolled])
        return out

    def _targets(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """Cube faces of the input and of the encoded target, with the validity mask."""
        from pager.geometry.cubemap import erp_to_cubemap
        from pager.geometry.depth_encoding import affine_normalize_depth, encode_depth

        mc = self.model_cfg
        rgb = batch["rgb"].float()
        mask = batch["mask"].bool()
        out: Dict[str, torch.Tensor] = {"faces": erp_to_cubemap(rgb, self.face_size, mode="bilinear")}
        if self.modality == "depth":
            depth = batch["depth"].float()
            if mc.metric_depth or mc.log_scale:
                target = encode_depth(depth, mc.min_depth, mc.max_depth, log_scale=mc.log_scale)
            else:
                target = affine_normalize_depth(depth, mask)
            out["target_erp"] = target
            if "normals" in batch:
                out["normals_erp"] = batch["normals"].float()
        else:
            if "normals" not in batch:
                raise ValueError("normals training needs 'normals' in the batches")
            target = batch["normals"].float()
            mask = mask & (target.norm(dim=1, keepdim=True) > 0.5)
            if mc.normals_frame == "reference":  # the checkpoint predicts in the reference's mirrored frame
                target = target * target.new_tensor([1.0, 1.0, -1.0]).view(1, 3, 1, 1)
            out["target_erp"] = target
        out["mask_erp"] = mask
        out["target"] = erp_to_cubemap(target, self.face_size, mode="bilinear")
        # a face pixel is supervised only when every ERP pixel it interpolates from is valid
        valid_fraction = erp_to_cubemap(mask.float(), self.face_size, mode="bilinear")
        out["mask"] = valid_fraction > 0.999
        # ... and counts as invalid (sky, beyond range: the saturation loss) only when none of them is valid
        out["invalid"] = valid_fraction < 0.001
        return out

    def _erp_depth(self, cube_values: torch.Tensor, height: int, width: int) -> torch.Tensor:
        from pager.geometry.cubemap import cubemap_to_erp
        from pager.geometry.depth_encoding import decode_depth

        mc = self.model_cfg
        return decode_depth(cubemap_to_erp(cube_values, height, width, mode="bilinear"), mc.min_depth, mc.max_depth, log_scale=mc.log_scale)

    def _loss(self, pred: torch.Tensor, t: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        cfg, mc = self.cfg, self.model_cfg
        if self.modality == "normals":
            return normals_losses(pred.float(), t["target"], t["mask"])
        height, width = t["target_erp"].shape[-2:]
        lw = float(_get(cfg, "loss.normals_consistency_loss_weight", 0.0))
        return depth_losses(
            pred.float().mean(dim=2, keepdim=True),
            t["target"],
            t["mask"],
            log_scale=mc.log_scale,
            metric_depth=mc.metric_depth,
            l1_loss_weight=float(_get(cfg, "loss.l1_loss_weight", 1.0)),
            grad_loss_weight=float(_get(cfg, "loss.grad_loss_weight", 0.0)),
            normals_consistency_loss_weight=lw,
            invalid_mask_weight=float(_get(cfg, "loss.invalid_mask_weight", 0.0)),
            gt_normals=t.get("normals_erp"),
            erp_mask=(t["mask_erp"] & (t["normals_erp"].norm(dim=1, keepdim=True) > 0.5)) if lw > 0 and "normals_erp" in t else None,
            to_erp_depth=lambda cube: self._erp_depth(cube, height, width),
            saturation_weight=float(_get(cfg, "loss.invalid_saturation_weight", 0.0)),
            invalid=t["invalid"],
            saturation=self._saturation,
            saturation_margin=float(_get(cfg, "loss.invalid_saturation_margin", 0.02)),
        )

    # ---------------------------------------------------------------------------------- reports
    def _report_images(self, batch: Dict[str, Any], t: Dict[str, torch.Tensor], pred: torch.Tensor, tag: str) -> None:
        """Log ``rgb | prediction | ground truth | error`` of the first panorama of a training batch."""
        from pager.geometry.cubemap import cubemap_to_erp

        with torch.no_grad():
            height, width = batch["rgb"].shape[-2:]
            mask = t["mask_erp"][:1]
            if self.modality == "depth":
                p = pred[:1].float().mean(dim=2, keepdim=True)
                p = align_relative_depth(p, t["target"][:1], t["mask"][:1], self.model_cfg.log_scale, self.model_cfg.metric_depth)
                pred_erp = self._erp_depth(p, height, width)
                gt_erp = self._erp_depth_from_erp(t["target_erp"][:1])
            else:
                pred_erp = cubemap_to_erp(pred[:1].float(), height, width, mode="bilinear")
                gt_erp = t["target_erp"][:1]
            image = report_mosaic(batch["rgb"][0], pred_erp[0], gt_erp[0], mask[0], self.modality)
        self._log_image(f"{tag}/rgb_pred_gt_error", image, self.progress.global_step)

    def _report_validation(self, tag: str):
        """Callback for :func:`evaluate_model`: the first validation panorama's mosaic (main process)."""

        def report(batch: Dict[str, Any], pred: torch.Tensor) -> None:
            if not self.accelerator.is_main_process:
                return
            gt = batch["depth" if self.modality == "depth" else "normals"][0].float()
            mask = batch.get("eval_mask", batch["mask"])[0].bool()
            image = report_mosaic(batch["rgb"][0], pred[0].float(), gt, mask, self.modality)
            self._log_image(f"{tag}/rgb_pred_gt_error", image, self.progress.global_step)

        return report

    def _erp_depth_from_erp(self, values: torch.Tensor) -> torch.Tensor:
        from pager.geometry.depth_encoding import decode_depth

        mc = self.model_cfg
        return decode_depth(values, mc.min_depth, mc.max_depth, log_scale=mc.log_scale)

    def _log_image(self, tag: str, image, step: int) -> None:
        from pager.export.files import save_image

        name = tag.replace("/", "_")
        save_image(self.run_dir / "images" / f"{name}_{step:07d}.jpg", image)
        if self.report_to == "tensorboard":
            writer = self.accelerator.get_tracker("tensorboard", unwrap=True)
            writer.add_image(tag, image, step, dataformats="HWC")
        elif self.report_to == "wandb":
            import wandb

            self.accelerator.log({tag: wandb.Image(image)}, step=step)

    def _log(self, values: Dict[str, float], step: int) -> None:
        if self.report_to != "none":
            self.accelerator.log(values, step=step)

    # ---------------------------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self, loader, tag: str) -> Dict[str, float]:
        """Metrics of the (EMA) model on a validation loader, averaged over images (all processes)."""
        mc = self.model_cfg
        alignment = resolve_validation_alignment(_get(self.cfg, "validation.val_alignment", "auto"), mc.metric_depth, mc.log_scale)
        was_training = self.unet.training
        self.unet.eval()
        context = self.ema.average_parameters(self.unet) if self.ema is not None else contextlib.nullcontext()
        try:
            with context:
                return evaluate_model(self.pager, self.modality, loader, self.face_size, alignment, tag=tag,
                                      gather=self.accelerator.gather_for_metrics, report=self._report_validation(tag))
        finally:
            if was_training:
                self.unet.train()

    # ---------------------------------------------------------------------------------- checkpoints
    def _saved_config(self) -> DictConfig:
        from pager.model.pager_model import attention_backend_used

        cfg = OmegaConf.create(OmegaConf.to_container(self.cfg, resolve=True))
        cfg.training.resume_path = None
        # what ran, not what was asked for (xformers falls back to SDPA when missing or off CUDA)
        used = attention_backend_used(getattr(self.pager, "attention_backend", "sdpa"), self.accelerator.device)
        cfg.model.attention_backend = used
        cfg.model.enable_xformers = used == "xformers"
        return cfg

    def save_checkpoint(self, name: str, with_state: bool) -> Path:
        """Write ``<run>/<name>`` (all processes must call it): built under a temporary name, then published
        with one atomic switch (:func:`publish_checkpoint`), so it is always complete or absent."""
        acc = self.accelerator
        final = self.run_dir / name
        tmp = self.run_dir / f".{name}.tmp"
        if acc.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        if with_state:
            save_training_state(acc, tmp / TRAINING_STATE_DIR, self.ema, self.lr_scheduler, self.progress)
        if acc.is_main_process:
            write_model_files(tmp, self.unet, self.ema, self._saved_config())
            publish_checkpoint(tmp, self.run_dir, name, self.progress.global_step)
            logger.info("saved %s at step %d", final, self.progress.global_step)
        acc.wait_for_everyone()
        return final

    # ---------------------------------------------------------------------------------- main loop
    def run(self, stop_after_steps: Optional[int] = None) -> TrainResult:
        """Train; ``stop_after_steps`` (testing aid) interrupts after that many optimisation steps of this
        call and saves ``checkpoint-last`` with the training state, like a preempted job would have."""
        from accelerate.utils import set_seed
        from tqdm.auto import tqdm

        self._check_config()
        self.run_dir = self._resolve_run_dir()
        self._make_accelerator()
        acc = self.accelerator
        cfg = self.cfg
        if not acc.is_main_process:  # one process reports; the others only warn
            logging.getLogger("pager").setLevel(max(logging.getLogger("pager").getEffectiveLevel(), logging.WARNING))
        set_seed(int(_get(cfg, "seed", 42)))
        self._build_datasets()
        self._resolve_model_config()
        cfg = self.cfg
        self._build_model()

        mp = str(_get(cfg, "training.mixed_precision", "no"))
        weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mp, torch.float32)
        self.pager.to(acc.device)
        if weight_dtype != torch.float32:
            self.pager.vae.to(dtype=weight_dtype)  # frozen: stored in the compute precision
        params = select_trainable_parameters(self.unet, bool(_get(cfg, "training.only_train_attention_layers", False)),
                                             str(cfg.model.unet_positional_encoding))
        if bool(_get(cfg, "training.gradient_checkpointing", False)):
            self.unet.enable_gradient_checkpointing()
            self.pager.vae.enable_gradient_checkpointing()
        self.unet.train()
        self.ema = EMAModel(self.unet, decay=float(_get(cfg, "training.ema_decay", 0.999))) if bool(_get(cfg, "training.use_EMA", False)) else None

        opt = cfg.optimization
        optimizer = torch.optim.AdamW(
            params, lr=float(opt.learning_rate), betas=(float(opt.adam_beta1), float(opt.adam_beta2)),
            weight_decay=float(opt.adam_weight_decay), eps=float(opt.adam_epsilon),
        )
        num_workers = int(_get(cfg, "training.num_workers", 0))
        loader_kwargs = dict(num_workers=num_workers, pin_memory=acc.device.type == "cuda", persistent_workers=num_workers > 0)
        train_dl = torch.utils.data.DataLoader(self.train_ds, batch_size=int(cfg.data.batch_size), shuffle=True, drop_last=True, **loader_kwargs)
        if len(train_dl) == 0:
            raise ValueError(f"the training split has {len(self.train_ds)} panoramas, fewer than batch_size={cfg.data.batch_size}")
        val_dl = torch.utils.data.DataLoader(self.val_ds, batch_size=int(cfg.data.batch_size), shuffle=False, **loader_kwargs) if self.val_ds is not None else None
        tiny_dl = torch.utils.data.DataLoader(self.tiny_val_ds, batch_size=int(cfg.data.batch_size), shuffle=False, num_workers=0) if self.tiny_val_ds is not None else None

        wrapper = _TrainedUNet(self.pager, self.modality)
        wrapper, optimizer, train_dl = acc.prepare(wrapper, optimizer, train_dl)
        if val_dl is not None:
            val_dl = acc.prepare(val_dl)
        if tiny_dl is not None:
            tiny_dl = acc.prepare(tiny_dl)

        accum = int(_get(cfg, "training.gradient_accumulation_steps", 1))
        steps_per_epoch = math.ceil(len(train_dl) / accum)
        max_steps = _get(cfg, "training.max_train_steps")
        if max_steps is None:
            num_epochs = int(cfg.training.num_train_epochs)
            max_steps = num_epochs * steps_per_epoch
        else:
            max_steps = int(max_steps)
            num_epochs = math.ceil(max_steps / steps_per_epoch)
        if max_steps < 1:
            raise ValueError(f"nothing to train: max_train_steps={max_steps}")
        lr_scheduler = build_lr_scheduler(optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer, max_steps,
                                          float(opt.lr_exp_warmup_steps), float(_get(cfg, "optimization.lr_final_ratio", 0.01)))
        self.lr_scheduler = lr_scheduler

        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            from pager.config import save_config

            save_config(self._saved_config(), self.run_dir / CONFIG_NAME)
        if self.report_to != "none":
            init_kwargs = {}
            if self.report_to == "wandb" and _get(cfg, "logging.run_name"):
                init_kwargs = {"wandb": {"name": str(cfg.logging.run_name)}}
            acc.init_trackers(str(_get(cfg, "logging.tracker_project_name", "Pager")),
                              config=_flatten(OmegaConf.to_container(self._saved_config(), resolve=True)), init_kwargs=init_kwargs)

        if self.state_dir is not None:
            load_training_state(acc, self.state_dir, self.ema, lr_scheduler, self.progress, allow_pickle=self.allow_pickle)
            # the schedule follows the current config (LambdaLR's state also restored the stored multiplier)
            lr_scheduler.lr_lambdas[0] = ExponentialWarmupSchedule(
                max_steps, float(opt.lr_exp_warmup_steps), float(_get(cfg, "optimization.lr_final_ratio", 0.01)))
            logger.info("resumed from %s: %s", self.state_dir, repr(self.progress))

        logger.info(
            "training %s: %d panoramas, %d processes x batch %d x accumulation %d, %d steps (%d epochs), %d trained parameters, run folder %s",
            self.modality, len(self.train_ds), acc.num_processes, int(cfg.data.batch_size), accum, max_steps, num_epochs,
            sum(p.numel() for p in params), self.run_dir,
        )
        loss_every = int(_get(cfg, "logging.loss_report_frequency", 1))
        img_every = int(_get(cfg, "logging.img_report_frequency", 200))
        tiny_every = int(_get(cfg, "validation.tiny_val_frequency", 200))
        save_every = int(_get(cfg, "logging.save_frequency", 1))
        ckpt_every = _get(cfg, "training.checkpointing_steps")
        clip = bool(_get(cfg, "optimization.clip_grad_norm", False))
        max_norm = float(_get(cfg, "optimization.max_grad_norm", 1.0))
        primary = "val/abs_rel" if self.modality == "depth" else "val/mean"

        result = TrainResult(run_dir=self.run_dir, global_step=self.progress.global_step, epoch=self.progress.epoch, checkpoint_dir=None)
        bar = tqdm(total=max_steps, initial=self.progress.global_step, desc="train", disable=not acc.is_main_process, dynamic_ncols=True)
        steps_this_call = 0
        stop = self.progress.global_step >= max_steps
        running: Dict[str, float] = {}
        n_micro = 0
        t_step = time.perf_counter()
        while not stop and self.progress.epoch < num_epochs:
            epoch = self.progress.epoch
            train_dl.set_epoch(epoch)
            loader = train_dl
            if self.progress.batches_in_epoch > 0:
                from accelerate import skip_first_batches

                loader = skip_first_batches(train_dl, self.progress.batches_in_epoch)
            for batch in loader:
                if bool(_get(cfg, "data.use_data_augmentation", False)):
                    batch = self._augment(batch)
                with acc.accumulate(wrapper):
                    t = self._targets(batch)
                    pred = wrapper(t["faces"])
                    losses = self._loss(pred, t)
                    total = losses["total_loss"]
                    if not torch.isfinite(total):
                        raise FloatingPointError(
                            f"non-finite training loss at step {self.progress.global_step} (batch {batch.get('id')}): "
                            f"{ {k: float(v) for k, v in losses.items()} }"
                        )
                    acc.backward(total)
                    if acc.sync_gradients and clip:
                        acc.clip_grad_norm_(params, max_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                for k, v in losses.items():
                    running[k] = running.get(k, 0.0) + float(v.detach())
                n_micro += 1
                self.progress.batches_in_epoch += 1
                if not acc.sync_gradients:
                    continue
                # ---- one optimisation step done
                lr_scheduler.step()
                if self.ema is not None:
                    self.ema.step(self.unet)
                self.progress.global_step += 1
                steps_this_call += 1
                step = self.progress.global_step
                step_losses = {k: v / max(n_micro, 1) for k, v in running.items()}
                running, n_micro = {}, 0
                dt = time.perf_counter() - t_step
                t_step = time.perf_counter()
                bar.update(1)
                bar.set_postfix(loss=f"{step_losses['total_loss']:.4f}", s_per_step=f"{dt:.2f}")
                result.last_losses = step_losses
                if step % loss_every == 0:
                    reduced = acc.reduce(torch.tensor([step_losses[k] for k in step_losses], device=acc.device), reduction="mean")
                    values = {f"train/{k}": float(v) for k, v in zip(step_losses, reduced.tolist())}
                    values["train/lr"] = float(lr_scheduler.get_last_lr()[0])
                    values["train/epoch"] = epoch
                    if acc.is_main_process:
                        self._log(values, step)
                if step % img_every == 0 and acc.is_main_process:
                    self._report_images(batch, t, pred.detach(), "train")
                if tiny_dl is not None and step % tiny_every == 0:
                    metrics = self.validate(tiny_dl, "tiny_val")
                    result.tiny_val_metrics = metrics
                    if acc.is_main_process:
                        logger.info("step %d tiny validation: %s", step, _fmt(metrics))
                        self._log(metrics, step)
                if step >= max_steps:
                    stop = True
                    break
                if ckpt_every and step % int(ckpt_every) == 0:
                    result.checkpoint_dir = self.save_checkpoint("checkpoint-last", with_state=True)
                if stop_after_steps is not None and steps_this_call >= int(stop_after_steps):
                    result.checkpoint_dir = self.save_checkpoint("checkpoint-last", with_state=True)
                    result.stopped_early = True
                    result.global_step, result.epoch = step, self.progress.epoch
                    bar.close()
                    acc.end_training()
                    return result
            # ---- end of the epoch (or of training)
            epoch_done = self.progress.batches_in_epoch >= len(train_dl)
            if epoch_done:
                self.progress.epoch += 1
                self.progress.batches_in_epoch = 0
            last = stop or self.progress.epoch >= num_epochs
            if epoch_done or last:
                if val_dl is not None:
                    metrics = self.validate(val_dl, "val")
                    result.val_metrics = metrics
                    if acc.is_main_process:
                        logger.info("epoch %d validation: %s", epoch, _fmt(metrics))
                        self._log(dict(metrics, **{"val/epoch": epoch}), self.progress.global_step)
                    score = metrics.get(primary)
                    if score is not None and math.isfinite(score) and (self.progress.best_metric is None or score < self.progress.best_metric):
                        self.progress.best_metric = score
                        self.save_checkpoint("checkpoint-best", with_state=False)
                if last or (epoch_done and self.progress.epoch % save_every == 0):
                    result.checkpoint_dir = self.save_checkpoint("checkpoint-last", with_state=True)
        bar.close()
        result.global_step, result.epoch = self.progress.global_step, self.progress.epoch
        if result.checkpoint_dir is None:
            result.checkpoint_dir = resolve_checkpoint(self.run_dir, "checkpoint-last")
        acc.end_training()
        logger.info("training finished at step %d; checkpoint %s", result.global_step, result.checkpoint_dir)
        if bool(_get(cfg, "data.skip_bad_samples", False)):
            # listing-time skips and decode failures seen in this process (DataLoader workers log their own)
            result.skipped = sum(int(getattr(ds, "skipped", 0)) for ds in (self.train_ds, self.val_ds, self.tiny_val_ds) if ds is not None)
            logger.warning("skip_bad_samples: %d bad sample(s) skipped (missing files at listing, decode failures in "
                           "this process; workers log theirs as they happen)", result.skipped)
        return result


@torch.no_grad()
def evaluate_model(
    pager: torch.nn.Module,
    modality: str,
    batches,
    face_size: int,
    alignment: str = "log_shift",
    tag: str = "val",
    gather: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    report: Optional[Callable[[Dict[str, Any], torch.Tensor], None]] = None,
) -> Dict[str, float]:
    """Evaluation metrics of ``pager`` over batches of panorama samples, averaged over images.

    Depth: ``pager.evaluation.metrics.depth_metrics`` after ``alignment`` (``metric``, ``log_shift``,
    ``scale``, ``scale_and_shift``, ...) over each sample's ``eval_mask``; normals: ``normals_metrics``.
    Returns ``{"<tag>/<metric>": value}``. ``gather`` (e.g. ``accelerator.gather_for_metrics``) collects the
    per-image rows of every process. ``report(batch, prediction)`` is called for the first batch with the
    aligned depth ``[B, 1, H, W]`` (metres) or the normals ``[B, 3, H, W]``.
    """
    from pager.evaluation.metrics import align_prediction, depth_metrics, normals_metrics

    keys: Optional[List[str]] = None
    rows: List[torch.Tensor] = []
    device = pager.device
    for batch in batches:
        out = pager.predict(batch["rgb"], modalities=[modality], face_size=face_size)
        mask = batch.get("eval_mask", batch["mask"]).bool().to(device)
        if modality == "depth":
            gt = batch["depth"].float().to(device)
            pred = align_prediction(out["depth"][:, None], gt, mask, alignment)
            metrics = depth_metrics(pred, gt, mask)
        else:
            gt = batch["normals"].float().to(device)
            pred = out["normals"]
            metrics = normals_metrics(pred, gt, mask)
        if report is not None and not rows:
            report(batch, pred)
        keys = list(metrics)
        row = torch.stack([metrics[k].float() for k in keys], dim=1)
        rows.append(gather(row) if gather is not None else row)
    if not rows or keys is None:
        return {}
    table = torch.cat(rows)
    return {f"{tag}/{k}": float(torch.nanmean(table[:, i]).item()) for i, k in enumerate(keys)}


def report_mosaic(rgb: torch.Tensor, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, modality: str):
    """``rgb | prediction | ground truth | error`` as one uint8 image ``[H, 4W + gaps, 3]``.

    ``rgb`` ``[3, H, W]`` in [-1, 1]; depth: ``pred``/``gt`` ``[1, H, W]`` metres, error = relative signed error;
    normals: ``[3, H, W]``, error = angle in degrees (0-90, inferno); ``mask`` ``[1, H, W]`` bool.
    """
    from pager.export.visualize import colorize_depth, depth_range, error_map, mosaic, normals_to_rgb

    rgb8 = ((rgb.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    m = mask.detach().reshape(mask.shape[-2:]).cpu().numpy()
    if modality == "depth":
        pd = pred.detach().float().reshape(pred.shape[-2:]).cpu().numpy()
        gd = gt.detach().float().reshape(gt.shape[-2:]).cpu().numpy()
        try:
            vmin, vmax = depth_range(gd, m)
        except ValueError:  # no valid ground truth: colour by the prediction
            vmin, vmax = float(pd.min()), float(pd.max()) + 1e-6
        images = [rgb8, colorize_depth(pd, vmin=vmin, vmax=vmax), colorize_depth(gd, m, vmin=vmin, vmax=vmax),
                  error_map(pd, gd, m, relative=True)]
    else:
        pn = pred.detach().float()
        pn = pn / pn.norm(dim=0, keepdim=True).clamp_min(1e-6)
        gn = gt.detach().float().to(pn.device)
        ang = torch.rad2deg(torch.acos((pn * gn).sum(dim=0).clamp(-1, 1))).cpu().numpy()
        images = [rgb8, normals_to_rgb(pn.cpu().numpy()), normals_to_rgb(gn.cpu().numpy(), m),
                  colorize_depth(ang, m, cmap="inferno", vmin=0.0, vmax=90.0)]
    return mosaic(images, gap=2)


def _fmt(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{k.split('/')[-1]}={v:.4g}" for k, v in metrics.items())


def train(cfg: DictConfig, overrides: Optional[Mapping[str, Any]] = None, stop_after_steps: Optional[int] = None,
          allow_pickle: bool = False) -> TrainResult:
    """Run a training job described by ``cfg`` (the merged config, see ``pager/configs/base.yaml``).

    ``overrides`` are the command-line values (used to warn when a checkpoint's model-loading keys win);
    ``stop_after_steps`` interrupts after that many optimisation steps and saves the resumable state;
    ``allow_pickle`` lets resuming unpickle files that weights-only loading refuses, and the model
    loaders read ``.bin`` weights (only for files you trust).
    """
    return Trainer(cfg, overrides, allow_pickle=allow_pickle).run(stop_after_steps=stop_after_steps)
