"""Checkpoint I/O of training: model folders in the released layout, and the training-state bookkeeping.

A model checkpoint written by training (loadable with ``Pager.from_pretrained(folder)``, which picks
``unet/``, then ``EMA/``, then ``original/``)::

    <checkpoint>/
        original/            diffusers UNet (config.json + diffusion_pytorch_model.safetensors): the trained weights
        EMA/                 the same UNet with the exponential moving average of the weights (when use_EMA)
        config.yaml          the full training config; its ``model:`` section decides how the model is built
        training_checkpoint/ (checkpoint-last only) the complete Accelerate state used by --resume_path

:func:`export_release` turns such a folder into the published layout (``unet/`` + ``config.yaml``).
Everything is written under a temporary name and renamed into place, so an interrupted save never
leaves a half-written checkpoint behind.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from omegaconf import DictConfig, OmegaConf

from pager.training.ema import EMAModel

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

TRAINING_STATE_DIR = "training_checkpoint"
CONFIG_NAME = "config.yaml"

__all__ = [
    "TRAINING_STATE_DIR",
    "TrainingProgress",
    "write_model_files",
    "save_model_checkpoint",
    "replace_directory",
    "export_release",
    "find_training_state",
]


class TrainingProgress:
    """Position of a run: optimisation steps done, current epoch and batches consumed in it, best score.

    Registered with ``accelerator.register_for_checkpointing`` so that it is saved with (and restored
    from) the Accelerate state.
    """

    def __init__(self) -> None:
        self.global_step = 0
        self.epoch = 0
        self.batches_in_epoch = 0
        self.best_metric: Optional[float] = None

    def state_dict(self) -> Dict[str, Any]:
        return {
            "global_step": int(self.global_step),
            "epoch": int(self.epoch),
            "batches_in_epoch": int(self.batches_in_epoch),
            "best_metric": None if self.best_metric is None else float(self.best_metric),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.global_step = int(state["global_step"])
        self.epoch = int(state["epoch"])
        self.batches_in_epoch = int(state["batches_in_epoch"])
        best = state.get("best_metric")
        self.best_metric = None if best is None else float(best)

    def __repr__(self) -> str:
        return f"TrainingProgress(step={self.global_step}, epoch={self.epoch}, batches_in_epoch={self.batches_in_epoch})"


def _plain_config(config: Union[DictConfig, Dict[str, Any]]) -> DictConfig:
    cfg = config if isinstance(config, DictConfig) else OmegaConf.create(config)
    # a plain copy, with Path objects (if any) as strings
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


def write_model_files(
    folder: PathLike, unet: torch.nn.Module, ema: Optional[EMAModel], config: Union[DictConfig, Dict[str, Any]]
) -> Path:
    """Write ``original/``, ``EMA/`` (if ``ema``) and ``config.yaml`` into an existing, empty ``folder``.

    ``unet`` is the bare diffusers UNet (not a DDP wrapper); its weights are left unchanged.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(str(folder / "original"), safe_serialization=True)
    if ema is not None:
        with ema.average_parameters(unet):
            unet.save_pretrained(str(folder / "EMA"), safe_serialization=True)
    OmegaConf.save(_plain_config(config), folder / CONFIG_NAME)
    return folder


def replace_directory(tmp: PathLike, final: PathLike) -> Path:
    """Move the complete directory ``tmp`` to ``final``, replacing an existing ``final`` only at the end."""
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


def save_model_checkpoint(
    out_dir: PathLike,
    unet: torch.nn.Module,
    ema: Optional[EMAModel],
    config: Union[DictConfig, Dict[str, Any]],
    overwrite: bool = True,
) -> Path:
    """Write a model checkpoint (released layout, see the module docstring) atomically; return ``out_dir``.

    Single-process helper; the trainer uses :func:`write_model_files` inside its own multi-process-safe
    temporary folder.
    """
    from pager.io_utils import atomic_directory

    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        write_model_files(tmp, unet, ema, config)
    logger.info("saved model checkpoint to %s", out_dir)
    return Path(out_dir)


def export_release(
    checkpoint_dir: PathLike,
    out_dir: PathLike,
    variant: str = "EMA",
    overwrite: bool = False,
    pretrained_path: Optional[str] = None,
) -> Path:
    """Copy one UNet variant of a training checkpoint to a release folder: ``unet/`` + ``config.yaml``.

    This is the published layout (e.g. ``prs-eth/PaGeR-depth``); the training state is not copied.
    ``pretrained_path`` replaces ``model.pretrained_path`` in the copied config (e.g. a hub id, or a path
    relative to the release folder, which the loader resolves against it).
    """
    from pager.io_utils import atomic_directory

    checkpoint_dir = Path(checkpoint_dir)
    if variant not in ("EMA", "original"):
        raise ValueError(f"variant must be 'EMA' or 'original', got {variant!r}")
    src = checkpoint_dir / variant
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint_dir} has no {variant}/ UNet (config.json missing)")
    if not (checkpoint_dir / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{checkpoint_dir} has no {CONFIG_NAME}")
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        shutil.copytree(src, tmp / "unet")
        cfg = OmegaConf.load(checkpoint_dir / CONFIG_NAME)
        if pretrained_path is not None:
            OmegaConf.update(cfg, "model.pretrained_path", str(pretrained_path), merge=False)
        OmegaConf.save(cfg, tmp / CONFIG_NAME)
    return Path(out_dir)


def find_training_state(resume_path: PathLike) -> Path:
    """The Accelerate state folder named by ``--resume_path``.

    Accepts the ``training_checkpoint/`` folder itself, a checkpoint folder holding one, or a run folder
    holding ``checkpoint-last/training_checkpoint``.
    """
    path = Path(resume_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"resume_path {str(resume_path)!r} does not exist")
    for candidate in (path, path / TRAINING_STATE_DIR, path / "checkpoint-last" / TRAINING_STATE_DIR):
        if candidate.is_dir() and (candidate / "progress.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"resume_path {str(resume_path)!r} holds no training state: expected a '{TRAINING_STATE_DIR}/' folder "
        "written by train.py (with progress.json), e.g. <run>/checkpoint-last/training_checkpoint"
    )
