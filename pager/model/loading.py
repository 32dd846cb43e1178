"""Checkpoint loading: Hugging Face repo ids or local folders in the released PaGeR layout.

A PaGeR checkpoint (e.g. ``prs-eth/PaGeR-depth``) is a folder holding::

    config.yaml                      the training config; its ``model:`` section decides how to build the model
    unet/                            diffusers UNet (config.json + diffusion_pytorch_model.safetensors)
    EMA/, original/                  (training output) the EMA and raw UNet weights, same format

The base components come from the folder or repo id named by ``model.pretrained_path`` in that YAML
(``GonzaloMG/marigold-e2e-ft-depth`` for the released models): the VAE (``vae/``), the scheduler config
(``scheduler/scheduler_config.json``) and the empty-prompt embedding, computed once with
``text_encoder/`` + ``tokenizer/`` and cached as a safetensors file (the text encoder is then dropped).

Model-loading parameters always come from the checkpoint's YAML (see :data:`pager.config.MODEL_LOADING_KEYS`);
attempts to override them are reported with a warning and ignored. Only safetensors weights are loaded;
pickle files (``.bin``, ``.pt``, ``.ckpt``) are refused unless ``allow_pickle=True``.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch

# ``model.cube_padding`` values; a checkpoint without the key is a released one and uses "reference"
from pager.geometry.cube_padding import CUBE_PADDING_MODES

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

MODALITIES = ("depth", "normals")
POSITIONAL_ENCODINGS = ("uv", "RoPE", "none")
NORMALS_FRAMES = ("reference", "pager")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
EMPTY_PROMPT_FILE = "empty_prompt_embedding.safetensors"
DEFAULT_MIN_DEPTH = 0.01
DEFAULT_MAX_DEPTH = 75.0
DEFAULT_MAX_DEPTH_INDOOR = 15.0
DEFAULT_FACE_SIZE = 768
#: Name reserved for the model embedded in the package (``pager/weights/default``).
DEFAULT_MODEL_NAME = "default"
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights" / "default"

#: Keys of a checkpoint's ``model:`` section that decide how it is built (one list, in pager.config).
from pager.config import MODEL_LOADING_KEYS  # noqa: E402


@dataclass
class ModalityConfig:
    """How one modality's UNet was trained and how its output is decoded (from the checkpoint's YAML).

    Attributes:
        modality: ``"depth"`` or ``"normals"``.
        positional_encoding: ``"uv"`` (2 extra UNet input channels), ``"RoPE"`` or ``"none"``.
        vae_use_RoPE: the raw YAML value; VAE RoPE is on only for the string ``"RoPE"`` (reference rule).
        metric_depth: depth in metres (True) or relative up to a scale (False).
        log_scale: depth encoded in log space between ``min_depth`` and ``max_depth``.
        min_depth, max_depth: the checkpoint's depth range in metres (never the dataset's).
        normals_frame: ``"reference"`` (mirrored frame of the released checkpoints: z is negated on output)
            or ``"pager"`` (our right-handed frame).
        face_size: default cube-face size in pixels.
        vae_rope_token_order: ``"reference_vae"`` (compatibility pairing) or ``"face_row_col"``.
        cube_padding: ``"reference"`` (released checkpoints; the default when the YAML has no
            ``model.cube_padding``) or ``"geometric"`` (see :func:`pager.geometry.cube_padding.cube_pad`).
        source: where the UNet came from (folder), for messages; ``name``: the checkpoint's short name.
    """

    modality: str = "depth"
    positional_encoding: str = "RoPE"
    vae_use_RoPE: Any = False
    metric_depth: bool = False
    log_scale: bool = True
    min_depth: float = DEFAULT_MIN_DEPTH
    max_depth: float = DEFAULT_MAX_DEPTH
    normals_frame: str = "reference"
    face_size: int = DEFAULT_FACE_SIZE
    vae_rope_token_order: str = "reference_vae"
    cube_padding: str = "reference"
    source: Optional[str] = None
    name: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.positional_encoding not in POSITIONAL_ENCODINGS:
            raise ValueError(f"unet_positional_encoding must be one of {POSITIONAL_ENCODINGS}, got {self.positional_encoding!r}")
        if self.normals_frame not in NORMALS_FRAMES:
            raise ValueError(f"normals_frame must be one of {NORMALS_FRAMES}, got {self.normals_frame!r}")
        if not (0 < self.min_depth < self.max_depth):
            raise ValueError(f"expected 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}")
        if self.cube_padding not in CUBE_PADDING_MODES:
            raise ValueError(f"cube_padding must be one of {CUBE_PADDING_MODES}, got {self.cube_padding!r}")
        if int(self.face_size) <= 0:
            raise ValueError(f"face_size must be positive, got {self.face_size}")

    @property
    def unet_in_channels(self) -> int:
        """RGB latent (4) + target latent (4) + 2 uv channels when ``positional_encoding == "uv"``."""
        return 10 if self.positional_encoding == "uv" else 8

    @classmethod
    def from_yaml_config(cls, cfg: Any, source: Optional[str] = None, name: Optional[str] = None) -> "ModalityConfig":
        """Build from a checkpoint's full config (with a ``model:`` section) or the section itself."""
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        cfg = dict(cfg or {})
        model = dict(cfg.get("model", cfg) or {})
        data = dict(cfg.get("data", {}) or {})
        modality = model.get("modality", "depth")
        if modality == "normal":
            modality = "normals"
        max_depth = model.get("max_depth")
        if max_depth is None:
            # Released configs carry no range: the reference decoded with its dataset's cap (15 m indoor-only).
            max_depth = DEFAULT_MAX_DEPTH_INDOOR if str(data.get("scenes", "both")) == "indoor" else DEFAULT_MAX_DEPTH
        min_depth = model.get("min_depth")
        if min_depth is None:
            min_depth = DEFAULT_MIN_DEPTH
        pe = model.get("unet_positional_encoding", "RoPE")
        if pe is None or pe is False:
            pe = "none"
        return cls(
            modality=modality,
            positional_encoding=str(pe),
            vae_use_RoPE=model.get("vae_use_RoPE", False),
            metric_depth=bool(model.get("metric_depth", False)),
            log_scale=bool(model.get("log_scale", True)),
            min_depth=float(min_depth),
            max_depth=float(max_depth),
            normals_frame=str(model.get("normals_frame") or "reference"),
            face_size=int(model.get("face_size") or DEFAULT_FACE_SIZE),
            vae_rope_token_order=str(model.get("vae_rope_token_order") or "reference_vae"),
            cube_padding=str(model.get("cube_padding") or "reference"),
            source=source,
            name=name,
            raw=cfg,
        )


# --------------------------------------------------------------------------------------------------
# Locating files: local folders and the Hugging Face Hub
# --------------------------------------------------------------------------------------------------


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value (read at call time)."""
    value = os.environ.get("HF_HUB_OFFLINE", "")
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants

        return bool(getattr(constants, "HF_HUB_OFFLINE", False))
    except Exception:  # pragma: no cover
        return False


def _hub_cache_dir() -> Optional[str]:
    """The hub cache folder from ``HF_HUB_CACHE`` / ``HF_HOME`` (read at call time), else the library default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _looks_like_repo_id(text: str) -> bool:
    parts = text.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not text.startswith((".", "/", "~"))
        and "\\" not in text
        and all(c.isalnum() or c in "-_." for c in text.replace("/", ""))
    )


#: Names of the embedded default model accepted wherever a checkpoint is taken (``--checkpoint_path``).
EMBEDDED_CHECKPOINTS = {
    "default": "",  # both modalities (a folder with depth/ and normals/)
    "default/depth": "depth",
    "default/normals": "normals",
    "default/normal": "normals",
}


def embedded_checkpoint(name: PathLike) -> Optional[Path]:
    """The folder of an embedded-model name (``default``, ``default/depth``, ``default/normals``), else ``None``.

    Raises ``FileNotFoundError`` when the name is used but the weights are not installed.
    """
    key = os.fspath(name).strip().rstrip("/\\").replace("\\", "/")
    if key not in EMBEDDED_CHECKPOINTS:
        return None
    folder = DEFAULT_WEIGHTS_DIR / EMBEDDED_CHECKPOINTS[key] if EMBEDDED_CHECKPOINTS[key] else DEFAULT_WEIGHTS_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint {key!r}: the embedded default model is not installed ({folder} is missing)")
    return folder


#: what a user can do when a Hub checkpoint cannot be obtained (replaces huggingface_hub's own advice, which
#: names Python arguments such as ``local_files_only`` that a command-line user cannot pass)
_HUB_ADVICE = ("use the embedded model (--checkpoint_path default / checkpoint_path='default'), a local folder in the "
               "released layout, or connect to the internet (and unset HF_HUB_OFFLINE) to download it")


def _hub_reason(exc: BaseException) -> str:
    """``exc``'s message on one line without huggingface_hub's advice about ``local_files_only``."""
    text = " ".join(str(exc).split())
    sentences = re.split(r"(?<=[.!?])\s+", text)
    kept = [s for s in sentences if "local_files_only" not in s]
    return " ".join(kept).rstrip(". ") or type(exc).__name__


def resolve_folder(
    path_or_repo_id: PathLike,
    what: str = "checkpoint",
    allow_patterns: Optional[list] = None,
    allow_pickle: bool = False,
) -> Path:
    """Return a local folder for a path or a Hugging Face repo id (downloaded or taken from the cache).

    Raises ``FileNotFoundError`` naming the argument when it is neither an existing folder nor a repo id
    that can be obtained (offline mode reads only the local cache).
    """
    text = os.fspath(path_or_repo_id)
    named = embedded_checkpoint(text)
    if named is not None:
        return named
    local = Path(text).expanduser()
    if local.exists():
        if not local.is_dir():
            raise NotADirectoryError(f"{what} {text!r} is a file; expected a folder in the released layout")
        return local
    if not _looks_like_repo_id(text):
        raise FileNotFoundError(f"{what} {text!r} is neither an existing folder nor a Hugging Face repo id (owner/name)")
    from huggingface_hub import snapshot_download

    offline = hub_offline()
    ignore = None if allow_pickle else [f"*{s}" for s in PICKLE_SUFFIXES]
    try:
        folder = snapshot_download(
            repo_id=text,
            allow_patterns=allow_patterns,
            ignore_patterns=ignore,
            cache_dir=_hub_cache_dir(),
            local_files_only=offline,
        )
    except Exception as exc:
        hint = " (HF_HUB_OFFLINE is set: only the local cache was searched)" if offline else ""
        raise FileNotFoundError(f"cannot obtain {what} {text!r} from the Hugging Face Hub{hint}: {_hub_reason(exc)}; "
                                f"{_HUB_ADVICE}") from exc
    return Path(folder)


def check_safetensors(path: Path, what: str = "weights") -> None:
    """Read the header of a ``.safetensors`` file (not its tensors): a truncated or corrupt file raises
    ``ValueError`` naming it, before any model is built."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as exc:  # safetensors' SafetensorError (a Rust exception type), OSError
        raise ValueError(f"{what}: {path} is not a readable safetensors file (truncated or corrupt?): "
                         f"{' '.join(str(exc).split())}") from exc


def _check_weights(folder: Path, what: str, allow_pickle: bool) -> bool:
    """Check that ``folder`` holds safetensors weights; return whether pickle weights must be used."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}: folder {folder} not found")
    safes = list(folder.glob("*.safetensors"))
    pickles = [p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
    if safes:
        for path in safes:
            check_safetensors(path, what)
        return False
    if pickles:
        if not allow_pickle:
            raise ValueError(
                f"{what}: {folder} holds only pickle weights ({', '.join(p.name for p in pickles)}). Loading them can "
                "run arbitrary code, so PaGeR loads safetensors only; convert them to safetensors, or pass "
                "allow_pickle=True (--allow_pickle) if you trust the file."
            )
        logger.warning("%s: loading pickle weights from %s because allow_pickle=True", what, folder)
        return True
    raise FileNotFoundError(f"{what}: no weights (*.safetensors) in {folder}")


def read_checkpoint_config(folder: Path) -> Dict[str, Any]:
    """Read ``config.yaml`` of a checkpoint folder (or of its parent, for ``<ckpt>/EMA``) as a dict."""
    from omegaconf import OmegaConf

    for candidate in (folder / "config.yaml", folder.parent / "config.yaml"):
        if candidate.is_file():
            try:
                raw = OmegaConf.to_container(OmegaConf.load(candidate), resolve=True)
            except Exception as exc:
                raise ValueError(f"cannot parse checkpoint config {candidate}: {exc}") from exc
            if not isinstance(raw, dict):
                raise ValueError(f"checkpoint config {candidate} must hold a mapping at the top level")
            from pager.config_schema import validate_mapping

            return validate_mapping(raw, "checkpoint", source=str(candidate))
    raise FileNotFoundError(f"checkpoint {folder} has no config.yaml (the YAML config stored with the model)")


def find_unet_folder(folder: Path, variant: Optional[str]) -> Path:
    """The UNet sub-folder of a checkpoint: ``unet/``, ``EMA/`` or ``original/`` (``<variant>/unet`` too).

    With ``variant=None``: ``unet/`` if present, else ``EMA/``, else ``original/``, else ``folder`` itself
    when it directly holds a UNet ``config.json``.
    """
    if variant is not None and variant not in ("EMA", "original", "unet"):
        raise ValueError(f"variant must be 'EMA', 'original', 'unet' or None, got {variant!r}")
    order = [variant] if variant else ["unet", "EMA", "original"]
    for name in order:
        for sub in (folder / name, folder / name / "unet"):
            if (sub / "config.json").is_file():
                return sub
    if variant is None and (folder / "config.json").is_file() and (folder.parent / "config.yaml").is_file():
        return folder
    wanted = f"'{variant}/'" if variant else "'unet/', 'EMA/' or 'original/'"
    hint = ""
    present = [f"'{n}/'" for n in ("unet", "EMA", "original") if (folder / n / "config.json").is_file()]
    if present:  # e.g. --variant original with a released-layout checkpoint among training ones
        hint = f" (it has {', '.join(present)}; --variant applies to every checkpoint given)"
    elif (folder / "checkpoint-last").is_dir():
        hint = f"; it looks like a training run folder: its latest checkpoint is {folder / 'checkpoint-last'}"
    raise FileNotFoundError(f"checkpoint {folder} has no UNet folder {wanted} with a config.json{hint}")


def warn_ignored_overrides(model_cfg: Mapping[str, Any], overrides: Optional[Mapping[str, Any]], where: str) -> None:
    """Warn for every model-loading parameter that a caller tried to change (the checkpoint's YAML wins)."""
    if not overrides:
        return
    for key, wanted in overrides.items():
        key = key.split(".")[-1]
        if key not in MODEL_LOADING_KEYS or wanted is None:
            continue
        have = model_cfg.get(key)
        if have != wanted:
            logger.warning(
                "%s=%r ignored: model-loading parameters come from the checkpoint's own config (%s has %s=%r)",
                key, wanted, where, key, have,
            )


# --------------------------------------------------------------------------------------------------
# Base components
# --------------------------------------------------------------------------------------------------


def _resolve_pretrained(pretrained_path: str, checkpoint_folder: Optional[Path]) -> str:
    """A relative ``pretrained_path`` is resolved against the checkpoint folder when that exists."""
    if checkpoint_folder is not None and not os.path.isabs(pretrained_path):
        candidate = (checkpoint_folder / pretrained_path)
        if candidate.is_dir():
            return str(candidate.resolve())
    return pretrained_path


def _cache_root() -> Path:
    root = os.environ.get("PAGER_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pager"


def _text_encoder_key(base: Path) -> str:
    parts = [str(base.resolve())]
    for sub in ("text_encoder", "tokenizer"):
        for f in sorted((base / sub).glob("*")):
            if f.is_file():
                st = f.stat()
                parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def compute_empty_prompt_embedding(base: Path, allow_pickle: bool = False) -> torch.Tensor:
    """Encode the empty prompt with the base's ``tokenizer/`` + ``text_encoder/``: ``[1, L, D]`` float32."""
    from transformers import CLIPTextModel, CLIPTokenizer

    use_pickle = _check_weights(base / "text_encoder", "text encoder", allow_pickle)
    tokenizer = CLIPTokenizer.from_pretrained(str(base / "tokenizer"))
    encoder = CLIPTextModel.from_pretrained(str(base / "text_encoder"), use_safetensors=not use_pickle)
    encoder.eval()
    ids = tokenizer([""], padding="max_length", truncation=True, return_tensors="pt").input_ids
    with torch.inference_mode():
        emb = encoder(ids, return_dict=False)[0]
    return emb.detach().float().clone()


def load_empty_prompt_embedding(pretrained_path: str, allow_pickle: bool = False) -> torch.Tensor:
    """The empty-prompt embedding ``[1, L, D]`` of a base model, computed once and cached as safetensors.

    Looked up in order: ``<base>/empty_prompt_embedding.safetensors``, the user cache
    (``$PAGER_CACHE_DIR`` or ``~/.cache/pager``), else computed with the text encoder and cached.
    """
    from safetensors.torch import load_file

    from pager.io_utils import atomic_write

    local = Path(pretrained_path).is_dir()
    if local:
        base = Path(pretrained_path)
    else:
        # Hub base: only the small files first, so that a cached embedding needs no text-encoder download.
        base = resolve_folder(pretrained_path, "base model", allow_patterns=[EMPTY_PROMPT_FILE, "tokenizer/*"])
    shipped = base / EMPTY_PROMPT_FILE
    if shipped.is_file():
        return load_file(str(shipped))["embedding"].float()
    if local:
        key = _text_encoder_key(base)
    else:  # a hub snapshot folder is named after its commit: repo id + revision identify the weights
        key = hashlib.sha256(f"hub:{pretrained_path}@{base.name}".encode()).hexdigest()[:24]
    cached = _cache_root() / "empty_prompt" / f"{key}.safetensors"
    if cached.is_file():
        try:
            return load_file(str(cached))["embedding"].float()
        except Exception as exc:  # a damaged cache file is recomputed, not trusted
            logger.warning("ignoring unreadable cached embedding %s: %s", cached, exc)
    if not local:
        base = resolve_folder(pretrained_path, "base model", allow_patterns=["tokenizer/*", "text_encoder/*"],
                              allow_pickle=allow_pickle)
    emb = compute_empty_prompt_embedding(base, allow_pickle=allow_pickle)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp_bytes = _safetensors_bytes({"embedding": emb.contiguous()})
        with atomic_write(cached) as handle:
            handle.write(tmp_bytes)
    except OSError as exc:  # read-only home: fine, just recompute next time
        logger.info("could not cache the empty-prompt embedding at %s: %s", cached, exc)
    return emb


def _safetensors_bytes(tensors: Dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(tensors)


def load_scheduler_alpha(pretrained_path: str, base: Optional[Path] = None) -> Tuple[float, int]:
    """``(alpha_cumprod[T-1], T)`` of the base's scheduler with ``rescale_betas_zero_snr=True``."""
    from diffusers import DDPMScheduler

    folder = base if base is not None else resolve_folder(pretrained_path, "base model", allow_patterns=["scheduler/*"])
    cfg_file = folder / "scheduler" / "scheduler_config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"base model {pretrained_path!r}: {cfg_file} not found")
    config = DDPMScheduler.load_config(str(folder / "scheduler"))
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    config["rescale_betas_zero_snr"] = True
    scheduler = DDPMScheduler.from_config(config)
    T = int(scheduler.config.num_train_timesteps)
    return float(scheduler.alphas_cumprod[T - 1]), T


def load_vae(pretrained_path: str, base: Optional[Path] = None, allow_pickle: bool = False):
    """The base's ``AutoencoderKL`` (float32, eval mode, frozen)."""
    from diffusers import AutoencoderKL

    folder = base if base is not None else resolve_folder(pretrained_path, "base model", allow_patterns=["vae/*"], allow_pickle=allow_pickle)
    use_pickle = _check_weights(folder / "vae", f"VAE of base model {pretrained_path!r}", allow_pickle)
    vae = AutoencoderKL.from_pretrained(str(folder / "vae"), use_safetensors=not use_pickle)
    vae.requires_grad_(False)
    vae.eval()
    return vae


def load_unet(folder: Path, expected_in_channels: Optional[int] = None, allow_pickle: bool = False, what: str = "UNet"):
    """Load a diffusers ``UNet2DConditionModel`` from ``folder`` (safetensors unless ``allow_pickle``)."""
    from diffusers import UNet2DConditionModel

    use_pickle = _check_weights(folder, what, allow_pickle)
    prev = logging.getLogger("diffusers.configuration_utils").level
    logging.getLogger("diffusers.configuration_utils").setLevel(logging.ERROR)  # reference extras (use_RoPE)
    try:
        unet = UNet2DConditionModel.from_pretrained(str(folder), use_safetensors=not use_pickle)
    finally:
        logging.getLogger("diffusers.configuration_utils").setLevel(prev)
    if expected_in_channels is not None and unet.config.in_channels != expected_in_channels:
        raise ValueError(
            f"{what} at {folder} has {unet.config.in_channels} input channels but its config asks for "
            f"{expected_in_channels} (8 + 2 for uv positional encoding)"
        )
    return unet


def widen_conv_in(unet, in_channels: int) -> None:
    """Widen ``unet.conv_in`` to ``in_channels`` inputs in place; the new input weights are zero."""
    old = unet.conv_in
    if in_channels < old.in_channels:
        raise ValueError(f"cannot shrink conv_in from {old.in_channels} to {in_channels} channels")
    if in_channels == old.in_channels:
        return
    new = torch.nn.Conv2d(
        in_channels, old.out_channels, kernel_size=old.kernel_size, stride=old.stride,
        padding=old.padding, bias=old.bias is not None, padding_mode=old.padding_mode,
    ).to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)


@dataclass
class LoadedCheckpoint:
    """One modality's UNet and config as read from a checkpoint folder."""

    unet: Any
    config: ModalityConfig
    folder: Path


def load_checkpoint(
    path_or_repo_id: PathLike,
    modality: Optional[str] = None,
    variant: Optional[str] = None,
    allow_pickle: bool = False,
    overrides: Optional[Mapping[str, Any]] = None,
) -> LoadedCheckpoint:
    """Read one released-layout checkpoint (folder or repo id): its YAML config and its UNet."""
    text = os.fspath(path_or_repo_id)
    local = Path(text).expanduser().exists()
    # Hub: config files first (to choose the UNet folder), then only that folder's weights.
    folder = resolve_folder(text, "checkpoint", allow_patterns=None if local else ["config.yaml", "*config.json"],
                            allow_pickle=allow_pickle)
    raw = read_checkpoint_config(folder)
    model_cfg = dict(raw.get("model", {}) or {})
    warn_ignored_overrides(model_cfg, overrides, f"{text}/config.yaml")
    name = Path(text.rstrip("/")).name
    cfg = ModalityConfig.from_yaml_config(raw, source=text, name=name)
    if modality is not None:
        modality = "normals" if modality == "normal" else modality
        if modality != cfg.modality:
            raise ValueError(f"checkpoint {text!r} is a {cfg.modality!r} model, but modality={modality!r} was requested")
    unet_folder = find_unet_folder(folder, variant)
    if not local:
        rel = unet_folder.relative_to(folder).as_posix()
        folder = resolve_folder(text, "checkpoint", allow_patterns=["config.yaml", f"{rel}/*"], allow_pickle=allow_pickle)
        unet_folder = folder / rel
    unet = load_unet(unet_folder, cfg.unet_in_channels, allow_pickle=allow_pickle, what=f"UNet of {text!r}")
    return LoadedCheckpoint(unet=unet, config=cfg, folder=folder)


def load_checkpoint_config_only(path_or_repo_id: PathLike) -> ModalityConfig:
    """The :class:`ModalityConfig` of a checkpoint (only ``config.yaml`` is read / downloaded)."""
    text = os.fspath(path_or_repo_id)
    folder = resolve_folder(text, "checkpoint", allow_patterns=["config.yaml"])
    return ModalityConfig.from_yaml_config(read_checkpoint_config(folder), source=text, name=Path(text.rstrip("/")).name)


def checkpoint_modalities(source: Union[PathLike, Mapping[str, PathLike], None]) -> Tuple[str, ...]:
    """What a checkpoint source (as for ``Pager.from_pretrained``) predicts, from its ``config.yaml`` only.

    Lets a command plan (and check) its output files before any weight is loaded.
    """
    if source is None or (isinstance(source, str) and source == DEFAULT_MODEL_NAME):
        return tuple(resolve_default_model())
    if isinstance(source, Mapping):
        return tuple(load_checkpoint_config_only(v).modality for v in source.values())
    return (load_checkpoint_config_only(source).modality,)


def checkpoint_config(source: Union[PathLike, Mapping[str, PathLike], None], modality: str) -> Optional[ModalityConfig]:
    """The :class:`ModalityConfig` of ``modality`` in a checkpoint source (as for ``Pager.from_pretrained``:
    ``None``/``"default"``, one checkpoint, or ``{modality: checkpoint}``), from its ``config.yaml`` only;
    ``None`` when the source does not predict ``modality``. Lets a command check options that depend on the
    model (e.g. the depth range against ``--depth_scale``) before any weight is loaded."""
    if source is None or (isinstance(source, str) and source == DEFAULT_MODEL_NAME):
        folders = resolve_default_model()
        return load_checkpoint_config_only(folders[modality]) if modality in folders else None
    if isinstance(source, Mapping):
        return load_checkpoint_config_only(source[modality]) if modality in source else None
    cfg = load_checkpoint_config_only(source)
    return cfg if cfg.modality == modality else None


def checkpoint_face_multiple(source: Union[PathLike, Mapping[str, PathLike], None],
                             variant: Optional[str] = None) -> Optional[int]:
    """What face sizes must be a multiple of for a checkpoint source (:attr:`Pager.face_multiple`: the VAE's
    down-sampling factor ``2 ** (len(block_out_channels) - 1)`` times the largest UNet's
    ``2 ** (len(down_block_types) - 1)``), from the ``config.json`` files alone, so that a command can check
    ``--face_size`` before it loads any weight. ``None`` where that needs a download (a Hub checkpoint or base)
    or the files cannot be read: the model checks the face size when it runs, and the loader reports broken files.
    """
    import json

    if source is None or (isinstance(source, str) and source == DEFAULT_MODEL_NAME):
        paths = list(resolve_default_model().values())
    elif isinstance(source, Mapping):
        paths = list(source.values())
    else:
        paths = [source]
    unet_factor, vae_factor = 1, None
    try:
        for text in paths:
            text = os.fspath(text)
            folder = embedded_checkpoint(text) or Path(text).expanduser()
            if not folder.is_dir():
                return None
            unet_cfg = json.loads((find_unet_folder(folder, variant) / "config.json").read_text())
            unet_factor = max(unet_factor, 2 ** (len(unet_cfg["down_block_types"]) - 1))
            pretrained = (read_checkpoint_config(folder).get("model") or {}).get("pretrained_path")
            vae_json = Path(_resolve_pretrained(str(pretrained), folder)) / "vae" / "config.json" if pretrained else None
            if vae_json is None or not vae_json.is_file():
                return None
            factor = 2 ** (len(json.loads(vae_json.read_text())["block_out_channels"]) - 1)
            vae_factor = factor if vae_factor is None else max(vae_factor, factor)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None if vae_factor is None else vae_factor * unet_factor


def check_face_size_option(face_size: Optional[int], multiple: Optional[int], option: str = "--face_size") -> None:
    """``ValueError`` naming ``option`` unless ``face_size`` (``None``: the checkpoint's) is a positive multiple of
    ``multiple`` (``None``: not known yet)."""
    if face_size is None or multiple is None:
        return
    if int(face_size) <= 0 or int(face_size) % int(multiple):
        lower = max(int(multiple), int(face_size) // int(multiple) * int(multiple))
        raise ValueError(f"{option} {face_size}: this model needs a positive multiple of {multiple} "
                         f"(e.g. {lower} or {lower + int(multiple)})")


def combine_checkpoints(paths: Sequence[PathLike], option: str = "--checkpoint_path") -> Union[str, Dict[str, str]]:
    """The checkpoint source of a command's ``--checkpoint_path A [B ...]``: ``"default"`` for none, the path for
    one, else ``{modality: path}`` from each checkpoint's ``config.yaml`` (no weights are read).

    ``default`` stands for both modalities of the embedded model (``default/depth``, ``default/normals``). A
    checkpoint named twice (also through ``default``: ``default default/depth``) is used once; two *different*
    checkpoints for one modality raise ``ValueError`` naming both (and, where ``default`` is one of them, saying
    that it already names both modalities).
    """
    texts = [os.fspath(p) for p in paths]
    if not texts:
        return DEFAULT_MODEL_NAME
    if len(texts) == 1:
        return texts[0]
    source: Dict[str, str] = {}
    given: Dict[str, str] = {}  # modality -> the argument it came from
    for text in texts:
        if text.strip().rstrip("/\\") == DEFAULT_MODEL_NAME:
            expanded = {m: f"{DEFAULT_MODEL_NAME}/{m}" for m in resolve_default_model()}
        else:
            expanded = {load_checkpoint_config_only(text).modality: text}
        for modality, ck in expanded.items():
            if modality in source:
                same = os.path.realpath(resolve_folder(source[modality])) == os.path.realpath(resolve_folder(ck))
                if same:
                    continue  # the same model named twice
                note = (f"; {DEFAULT_MODEL_NAME!r} already names both the depth and the normals model"
                        if DEFAULT_MODEL_NAME in (given[modality].strip().rstrip("/"), text.strip().rstrip("/")) else "")
                raise ValueError(f"{option}: two {modality} checkpoints ({given[modality]}, {text}){note}")
            source[modality], given[modality] = ck, text
    if source == {m: f"{DEFAULT_MODEL_NAME}/{m}" for m in resolve_default_model()}:
        return DEFAULT_MODEL_NAME  # `default` (possibly with its parts) names exactly the embedded model
    return source


def resolve_default_model() -> Dict[str, str]:
    """Checkpoints of the embedded default model: ``{modality: folder}``; a clear error while absent."""
    root = DEFAULT_WEIGHTS_DIR
    found: Dict[str, str] = {}
    if (root / "config.yaml").is_file():
        cfg = ModalityConfig.from_yaml_config(read_checkpoint_config(root))
        found[cfg.modality] = str(root)
    for modality in MODALITIES:
        if (root / modality / "config.yaml").is_file():
            found[modality] = str(root / modality)
    if not found:
        raise FileNotFoundError(
            "no embedded default model is installed with this copy of PaGeR (pager/weights/default is empty): "
            "a checkpoint is required; pass one with --checkpoint_path / checkpoint_path=..., e.g. a local folder "
            "in the released layout or a Hugging Face repo id such as 'prs-eth/PaGeR-depth'"
        )
    return found


def load_base(pretrained_path: str, checkpoint_folder: Optional[Path] = None, allow_pickle: bool = False):
    """``(vae, empty_prompt_embedding[1, L, D], alpha_cumprod_T-1, T)`` of a base model (repo id or folder)."""
    pretrained_path = _resolve_pretrained(str(pretrained_path), checkpoint_folder)
    local = Path(pretrained_path).is_dir()
    if local:
        base_local = Path(pretrained_path)
    else:
        base_local = resolve_folder(pretrained_path, "base model", allow_patterns=["vae/*", "scheduler/*"],
                                    allow_pickle=allow_pickle)
    vae = load_vae(pretrained_path, base_local, allow_pickle=allow_pickle)
    alpha, T = load_scheduler_alpha(pretrained_path, base_local)
    emb = load_empty_prompt_embedding(str(base_local) if local else pretrained_path, allow_pickle=allow_pickle)
    if not math.isfinite(alpha):
        raise ValueError(f"scheduler of {pretrained_path!r} gives a non-finite alpha_cumprod")
    return vae, emb, alpha, T
