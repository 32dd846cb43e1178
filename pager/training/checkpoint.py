"""Checkpoint I/O of training: model folders in the released layout, and the training state used to resume.

A model checkpoint written by training (loadable with ``Pager.from_pretrained(folder)``, which picks
``unet/``, then ``EMA/``, then ``original/``)::

    <checkpoint>/
        original/            diffusers UNet (config.json + diffusion_pytorch_model.safetensors): the trained weights
        EMA/                 the same UNet with the exponential moving average of the weights (when use_EMA)
        config.yaml          the full training config; its ``model:`` section decides how the model is built
        training_checkpoint/ (checkpoint-last only) the state used by --resume_path:
            model.safetensors, optimizer.bin, random_states_<process>.pkl   Accelerate's own files
            ema.safetensors       EMA averages (decay and update count in the safetensors metadata)
            lr_scheduler.json     the LR schedule's state
            progress.json         step, epoch, batches consumed in the epoch, best validation score

Nothing in a training state needs unpickling arbitrary objects: our objects are safetensors/JSON, and
Accelerate's pickles (optimizer, RNG states) are loaded with ``weights_only=True`` and Accelerate's own
allow-list (numpy arrays for the RNG states). A file that needs more is refused, naming it, unless
``allow_pickle`` is given (``train.py --allow_pickle``); so are the ``custom_checkpoint_*.pkl`` files of
states written before this format.

``<run>/checkpoint-last`` and ``<run>/checkpoint-best`` are published by :func:`publish_checkpoint`: the
new checkpoint is built under a temporary name, renamed to a versioned folder
(``checkpoint-last.step-000123``) once complete, and ``checkpoint-last`` -- a relative symbolic link -- is
switched to it with one atomic rename. At every instant ``checkpoint-last`` names a complete checkpoint
(or, before the first save, nothing); leftovers of an interrupted save are removed by the next one.
:func:`export_release` turns a checkpoint into the published layout (``unet/`` + ``config.yaml``).
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch
from omegaconf import DictConfig, OmegaConf

from pager.training.ema import EMAModel

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

TRAINING_STATE_DIR = "training_checkpoint"
CONFIG_NAME = "config.yaml"
EMA_STATE_NAME = "ema.safetensors"
SCHEDULER_STATE_NAME = "lr_scheduler.json"
PROGRESS_NAME = "progress.json"
#: files of training states written before the safetensors/JSON format (pickles of EMA, schedule, progress)
LEGACY_CUSTOM_STATE = "custom_checkpoint_*.pkl"
#: suffixes of the pickle files Accelerate writes (optimizer, RNG states, scaler, sampler)
STATE_PICKLE_SUFFIXES = (".bin", ".pkl", ".pt", ".pth")
_VERSION = re.compile(r"\.step-(\d+)(?:-(\d+))?$")

__all__ = [
    "TRAINING_STATE_DIR",
    "TrainingProgress",
    "UnsafePickleError",
    "ResumePoint",
    "write_model_files",
    "save_model_checkpoint",
    "export_release",
    "publish_checkpoint",
    "resolve_checkpoint",
    "find_resume_point",
    "find_training_state",
    "unsafe_pickle_globals",
    "check_training_state",
    "save_training_state",
    "load_training_state",
]


class UnsafePickleError(ValueError):
    """A file can only be read by unpickling arbitrary objects (which can run code); refused without ``allow_pickle``."""


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


# -------------------------------------------------------------------------------------------------
# publishing checkpoint-last / checkpoint-best atomically
# -------------------------------------------------------------------------------------------------

def _versions(run_dir: Path, name: str) -> List[Path]:
    """Complete versioned folders ``<name>.step-N[-k]`` of ``run_dir``, oldest first."""
    found = []
    for path in run_dir.glob(f"{name}.step-*"):
        match = _VERSION.search(path.name[len(name):])
        if match and path.name.startswith(name + ".step-") and path.is_dir() and not path.is_symlink():
            found.append(((int(match.group(1)), int(match.group(2) or 0)), path))
    return [p for _, p in sorted(found)]


def resolve_checkpoint(run_dir: PathLike, name: str = "checkpoint-last") -> Optional[Path]:
    """The complete checkpoint ``<run_dir>/<name>`` names, or ``None`` when the run has none yet.

    ``<name>`` itself when it exists; otherwise (a save interrupted between the two renames of the
    fallback used where symbolic links are unavailable) the newest complete ``<name>.step-N`` folder.
    """
    run_dir = Path(run_dir)
    link = run_dir / name
    if link.exists():
        return link
    versions = _versions(run_dir, name)
    return versions[-1] if versions else None


def _remove_leftovers(run_dir: Path, name: str) -> None:
    """Remove what interrupted saves of ``<name>`` left behind (never the folder ``<name>`` points to)."""
    link = run_dir / name
    current = link.resolve() if link.exists() else None
    for path in _versions(run_dir, name):
        if current is None or path.resolve() != current:
            shutil.rmtree(path, ignore_errors=True)
    for path in run_dir.glob(f".{name}.*"):
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def publish_checkpoint(tmp: PathLike, run_dir: PathLike, name: str, step: int) -> Path:
    """Make the complete folder ``tmp`` the checkpoint ``<run_dir>/<name>``; return ``<run_dir>/<name>``.

    ``tmp`` is renamed to ``<name>.step-<step>`` (a complete checkpoint from then on) and ``<name>``, a
    relative symbolic link, is switched to it by one atomic ``os.replace``: there is no instant at which
    ``<name>`` is missing or incomplete. Where symbolic links cannot be created (some Windows set-ups),
    ``<name>`` is a real folder replaced by two renames; :func:`resolve_checkpoint` then finds the newest
    complete version if a kill fell between them. Folders of earlier and interrupted saves are removed.
    Single process: call it from the main process only.
    """
    tmp, run_dir = Path(tmp), Path(run_dir)
    link = run_dir / name
    version = run_dir / f"{name}.step-{int(step):06d}"
    k = 0
    while version.exists() or version.is_symlink():  # saved twice at one step (periodic + end of epoch)
        k += 1
        version = run_dir / f"{name}.step-{int(step):06d}-{k}"
    os.replace(tmp, version)
    if link.is_symlink() or not link.exists():
        pointer = run_dir / f".{name}.link-{os.getpid()}"
        if pointer.is_symlink() or pointer.exists():
            pointer.unlink()
        try:
            os.symlink(version.name, pointer, target_is_directory=True)
        except (OSError, NotImplementedError):
            pointer = None
        if pointer is not None:
            os.replace(pointer, link)
            _remove_leftovers(run_dir, name)
            return link
    # a real folder (a run started by an older PaGeR, or no symbolic links here): two renames
    old = run_dir / f".{name}.old-{os.getpid()}"
    if old.exists():
        shutil.rmtree(old)
    if link.exists():
        os.replace(link, old)
    os.replace(version, link)
    _remove_leftovers(run_dir, name)
    return link


# -------------------------------------------------------------------------------------------------
# resuming
# -------------------------------------------------------------------------------------------------

@dataclass
class ResumePoint:
    """Where ``--resume_path`` continues: the run folder, its training state and the config to use.

    ``state_dir`` is ``None`` for a run that never completed a checkpoint (e.g. killed during its first
    save): it starts again from step 0 in the same folder with the config it was started with.
    """

    run_dir: Path
    state_dir: Optional[Path]
    config_path: Path


def find_resume_point(resume_path: PathLike) -> ResumePoint:
    """Interpret ``--resume_path``: a ``training_checkpoint/`` folder, a checkpoint folder holding one, or a
    run folder (its ``checkpoint-last``; a run folder without any complete checkpoint restarts).

    Raises ``FileNotFoundError`` naming the path when it is none of these.
    """
    path = Path(resume_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"resume_path {str(resume_path)!r} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"resume_path {str(resume_path)!r} is a file; expected a training_checkpoint/ or run folder")
    for candidate in (path, path / TRAINING_STATE_DIR):
        if (candidate / PROGRESS_NAME).is_file():
            return ResumePoint(candidate.parent.parent, candidate, candidate.parent / CONFIG_NAME)
    last = resolve_checkpoint(path, "checkpoint-last")
    if last is not None and (last / TRAINING_STATE_DIR / PROGRESS_NAME).is_file():
        return ResumePoint(path, last / TRAINING_STATE_DIR, last / CONFIG_NAME)
    is_model_folder = any((path / sub).is_dir() for sub in ("original", "EMA", "unet"))
    if last is None and (path / CONFIG_NAME).is_file() and not is_model_folder:
        logger.warning("resume_path %s: the run has no complete checkpoint yet (interrupted before or during its "
                       "first save); it starts again from step 0 with its stored config", path)
        return ResumePoint(path, None, path / CONFIG_NAME)
    raise FileNotFoundError(
        f"resume_path {str(resume_path)!r} holds no training state: expected a '{TRAINING_STATE_DIR}/' folder "
        f"written by train.py (with {PROGRESS_NAME}), e.g. <run>/checkpoint-last/{TRAINING_STATE_DIR}, or a run folder"
    )


def find_training_state(resume_path: PathLike) -> Path:
    """The training-state folder named by ``--resume_path`` (see :func:`find_resume_point`)."""
    point = find_resume_point(resume_path)
    if point.state_dir is None:
        raise FileNotFoundError(f"resume_path {str(resume_path)!r}: the run has no complete checkpoint yet")
    return point.state_dir


def _safe_globals() -> list:
    """Accelerate's allow-list for weights-only loading of its files (numpy arrays of the RNG states)."""
    from accelerate.utils.other import TORCH_SAFE_GLOBALS

    return list(TORCH_SAFE_GLOBALS)


def unsafe_pickle_globals(path: PathLike, load: bool = False) -> List[str]:
    """Names of what unpickling the ``torch.save`` file ``path`` needs beyond weights-only loading (with
    Accelerate's allow-list); ``[]`` when it is safe.

    The pickle is disassembled without being run (``torch.serialization.get_unsafe_globals_in_checkpoint``);
    ``load=True`` (or a file that is not a torch zip) also runs the weights-only unpickler on it, which
    refuses anything else. Raises ``ValueError`` naming the file when it cannot be read at all.
    """
    path = Path(path)
    with torch.serialization.safe_globals(_safe_globals()):
        try:
            unsafe = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except ValueError:  # not a torch zip (a plain pickle): the weights-only unpickler decides
            unsafe, load = [], True
        except Exception as exc:
            raise ValueError(f"{path}: cannot read it (truncated or not a torch file?): {exc}") from exc
        if unsafe or not load:
            return unsafe
        try:
            torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
            return [lines[0] if lines else str(exc).splitlines()[0]]
        except Exception as exc:
            raise ValueError(f"{path}: cannot read it (truncated or not a torch file?): {exc}") from exc
    return []


def _refusal(path: Path, needs: List[str]) -> UnsafePickleError:
    shown = ", ".join(needs[:4]) + (", ..." if len(needs) > 4 else "")
    return UnsafePickleError(
        f"{path}: refusing to unpickle it: it needs {shown}, beyond weights-only loading, and unpickling can run "
        "arbitrary code. Resume with --allow_pickle only if you trust this file."
    )


def check_training_state(state_dir: PathLike, allow_pickle: bool = False) -> bool:
    """Check a training-state folder before anything is loaded; return whether it is in the legacy format.

    Every pickle file (optimizer, RNG states, ...) must load weights-only; ``custom_checkpoint_*.pkl``
    files (states written before the safetensors/JSON format) need ``allow_pickle``. Raises
    :class:`UnsafePickleError` naming the file, ``FileNotFoundError`` for a missing part.
    """
    state_dir = Path(state_dir)
    legacy = sorted(state_dir.glob(LEGACY_CUSTOM_STATE))
    if legacy and not allow_pickle:
        raise UnsafePickleError(
            f"{legacy[0]}: this training state stores EMA/schedule/progress as pickles (written by an older PaGeR); "
            "unpickling can run arbitrary code. Resume with --allow_pickle only if you trust these files."
        )
    if not legacy:
        missing = [n for n in (SCHEDULER_STATE_NAME, PROGRESS_NAME) if not (state_dir / n).is_file()]
        if missing:
            raise FileNotFoundError(f"training state {state_dir} is incomplete: {', '.join(missing)} missing")
    for path in sorted(state_dir.iterdir()):
        if path.suffix not in STATE_PICKLE_SUFFIXES or path in legacy or not path.is_file():
            continue
        # Accelerate ignores an RNG state it cannot load (the run would silently diverge): load those fully
        needs = unsafe_pickle_globals(path, load=path.name.startswith("random_states"))
        if needs:
            if not allow_pickle:
                raise _refusal(path, needs)
            logger.warning("%s needs %s beyond weights-only loading; loading it because allow_pickle is set", path, needs)
    return bool(legacy)


def save_training_state(accelerator: Any, state_dir: PathLike, ema: Optional[EMAModel], lr_scheduler: Any,
                        progress: TrainingProgress) -> Path:
    """Write the resumable state into ``state_dir`` (all processes call it; see the module docstring).

    Accelerate writes the prepared model (safetensors), optimizer and per-process RNG states; the main
    process adds the EMA (safetensors), the LR schedule and the progress (JSON).
    """
    from safetensors.torch import save_file

    from pager.io_utils import atomic_save

    state_dir = Path(state_dir)
    accelerator.save_state(str(state_dir), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            state = ema.state_dict()
            save_file({k: v.contiguous() for k, v in state["shadow"].items()}, str(state_dir / EMA_STATE_NAME),
                      metadata={"decay": repr(float(state["decay"])), "num_updates": str(int(state["num_updates"]))})
        atomic_save(state_dir / SCHEDULER_STATE_NAME, (json.dumps(lr_scheduler.state_dict(), indent=2, allow_nan=False) + "\n").encode())
        atomic_save(state_dir / PROGRESS_NAME, (json.dumps(progress.state_dict(), indent=2) + "\n").encode())
    accelerator.wait_for_everyone()
    return state_dir


def load_training_state(accelerator: Any, state_dir: PathLike, ema: Optional[EMAModel], lr_scheduler: Any,
                        progress: TrainingProgress, allow_pickle: bool = False) -> None:
    """Restore what :func:`save_training_state` wrote (after ``accelerator.prepare``; all processes).

    Nothing is unpickled beyond weights-only loading unless ``allow_pickle``; errors name the file.
    """
    from safetensors import safe_open

    state_dir = Path(state_dir)
    legacy = check_training_state(state_dir, allow_pickle)
    if legacy:  # Accelerate's own custom-object files, in the order the older trainer registered them
        objects = ([ema] if ema is not None else []) + [lr_scheduler, progress]
        found = len(list(state_dir.glob(LEGACY_CUSTOM_STATE)))
        if found != len(objects):
            raise ValueError(f"training state {state_dir} holds {found} custom_checkpoint_*.pkl files, expected "
                             f"{len(objects)} (use_EMA must match the run that wrote it)")
        logger.warning("%s: loading the pickled EMA/schedule/progress of an older training state (allow_pickle)", state_dir)
        for obj in objects:
            accelerator.register_for_checkpointing(obj)
    try:
        accelerator.load_state(str(state_dir), load_kwargs={"weights_only": False} if allow_pickle else None)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnsafePickleError(f"{state_dir}: a file of this training state cannot be loaded weights-only ({first}); "
                                "resume with --allow_pickle only if you trust it") from exc
    finally:
        if legacy:  # from now on the state is written as safetensors/JSON (no private API for unregistering)
            del accelerator._custom_objects[-len(objects):]
    if legacy:
        return
    if ema is not None:
        path = state_dir / EMA_STATE_NAME
        if not path.is_file():
            raise FileNotFoundError(f"training state {state_dir} has no {EMA_STATE_NAME}, but use_EMA is on")
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                shadow = {k: handle.get_tensor(k) for k in handle.keys()}
            ema.load_state_dict({"shadow": shadow, "decay": float(meta["decay"]), "num_updates": int(meta["num_updates"])})
        except (KeyError, ValueError, OSError, RuntimeError) as exc:
            raise ValueError(f"{path}: cannot restore the EMA from it: {exc}") from exc
        except Exception as exc:  # safetensors' own error type (a truncated or corrupt file)
            raise ValueError(f"{path}: cannot read it (truncated or corrupt safetensors?): {exc}") from exc
    for name, obj in ((SCHEDULER_STATE_NAME, lr_scheduler), (PROGRESS_NAME, progress)):
        path = state_dir / name
        try:
            obj.load_state_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: cannot restore the training state from it: {exc}") from exc
