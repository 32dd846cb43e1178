"""Tiny, randomly initialised PaGeR checkpoints in exactly the released on-disk layout.

Tests, examples and benchmarks use these so that they run the *real* loading code on CPU in
milliseconds, without any download. Two folders are written:

``<base_dir>`` (what the checkpoint's ``pretrained_path`` points at; stands in for
``GonzaloMG/marigold-e2e-ft-depth``)::

    vae/config.json, vae/diffusion_pytorch_model.safetensors      (tiny AutoencoderKL)
    unet/config.json, unet/diffusion_pytorch_model.safetensors    (tiny base UNet, 8 input channels)
    scheduler/scheduler_config.json                               (SD-2 v-prediction DDIM schedule)
    text_encoder/config.json, text_encoder/model.safetensors      (tiny CLIPTextModel)
    tokenizer/vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json

``<out_dir>`` (the checkpoint, like ``prs-eth/PaGeR-depth``)::

    unet/config.json, unet/diffusion_pytorch_model.safetensors
    config.yaml                    (the training config; its ``model:`` section drives loading)

plus optionally ``EMA/`` and ``original/`` UNet variants (as written by training).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: SD-2 scheduler values (the Marigold-e2e-ft family uses them with ``rescale_betas_zero_snr``).
SCHEDULER_CONFIG: Dict[str, Any] = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "trailing",
    "rescale_betas_zero_snr": True,
}

TINY_TEXT_HIDDEN = 16
TINY_VAE_CHANNELS = (8, 8, 16, 16)
TINY_UNET_CHANNELS = (16, 32)


def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode character table (the tokenizer's base alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def write_tiny_tokenizer(folder: PathLike) -> Path:
    """Write a CLIP BPE tokenizer with a hand-made byte-level vocabulary and a few merges (offline)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = list(_bytes_to_unicode().values())
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>")]
    vocab_list += ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n", encoding="utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")
    cfg = dict(special, model_max_length=77, tokenizer_class="CLIPTokenizer", do_lower_case=True)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return folder


def tiny_vae_config(sample_size: int = 32) -> Dict[str, Any]:
    """AutoencoderKL config: 4 levels (scale factor 8, like SD), 4 latent channels, a mid-block attention."""
    n = len(TINY_VAE_CHANNELS)
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
        block_out_channels=list(TINY_VAE_CHANNELS),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=sample_size,
        scaling_factor=0.18215,
    )


def tiny_unet_config(in_channels: int = 8, sample_size: int = 16) -> Dict[str, Any]:
    """UNet2DConditionModel config: 2 levels, cross-attention blocks with 2 heads of dim 8 / 16."""
    return dict(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
        block_out_channels=list(TINY_UNET_CHANNELS),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=TINY_TEXT_HIDDEN,
        attention_head_dim=2,  # diffusers' legacy name: number of heads (SD-2 style)
        use_linear_projection=True,
    )


def _save_model(model: torch.nn.Module, folder: Path) -> None:
    model.save_pretrained(str(folder), safe_serialization=True)


def tiny_vae(seed: int = 0, face_size: int = 32):
    """The tiny random ``AutoencoderKL`` that :func:`build_tiny_base` writes for ``seed``."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**tiny_vae_config(face_size))


def tiny_unet(positional_encoding: str = "RoPE", seed: int = 0, face_size: int = 32):
    """The tiny random checkpoint UNet that :func:`build_tiny_checkpoint` writes for ``seed``."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(**tiny_unet_config(10 if positional_encoding == "uv" else 8, max(face_size // 8, 2)))
    # Extra field of the reference's configs: must load without error.
    unet.register_to_config(use_RoPE=positional_encoding == "RoPE")
    return unet


def tiny_text_encoder(vocab_size: int, seed: int = 0):
    """The tiny random ``CLIPTextModel`` of :func:`build_tiny_base`."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed + 2)
    text_cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TINY_TEXT_HIDDEN,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=TINY_TEXT_HIDDEN,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    return CLIPTextModel(text_cfg)


def build_tiny_base(base_dir: PathLike, seed: int = 0, face_size: int = 32) -> Path:
    """Write a complete tiny base-model folder (vae, unet, scheduler, text encoder, tokenizer).

    ``face_size`` only sets the configs' nominal ``sample_size``; any multiple of 16 works at run time.
    """
    from diffusers import UNet2DConditionModel

    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    _save_model(tiny_vae(seed, face_size), base_dir / "vae")
    torch.manual_seed(seed + 3)
    _save_model(UNet2DConditionModel(**tiny_unet_config(8, max(face_size // 8, 2))), base_dir / "unet")
    (base_dir / "scheduler").mkdir(exist_ok=True)
    (base_dir / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2))
    tok_dir = write_tiny_tokenizer(base_dir / "tokenizer")
    vocab_size = len(json.loads((tok_dir / "vocab.json").read_text(encoding="utf-8")))
    _save_model(tiny_text_encoder(vocab_size, seed), base_dir / "text_encoder")
    (base_dir / "model_index.json").write_text(json.dumps({"_class_name": "PagerTinyBase", "_note": "tiny random base for tests"}))
    return base_dir


def build_tiny_checkpoint(
    out_dir: PathLike,
    modality: str = "depth",
    positional_encoding: str = "RoPE",
    vae_use_RoPE: Union[bool, str] = False,
    seed: int = 0,
    metric_depth: bool = False,
    log_scale: bool = True,
    base_dir: Optional[PathLike] = None,
    pretrained_path: Optional[str] = None,
    variants: Sequence[str] = ("unet",),
    face_size: int = 32,
    min_depth: Optional[float] = None,
    max_depth: Optional[float] = None,
    normals_frame: Optional[str] = None,
    scenes: str = "both",
    extra_model_config: Optional[Dict[str, Any]] = None,
    cube_padding: Optional[str] = "geometric",
) -> Path:
    """Write a tiny random PaGeR checkpoint (and its tiny base) in the released layout; return ``out_dir``.

    Args:
        out_dir: checkpoint folder to create (``unet/``, ``config.yaml``, and other ``variants``).
        modality: ``"depth"`` or ``"normals"``.
        positional_encoding: ``"RoPE"``, ``"uv"`` (UNet gets 10 input channels) or ``"none"``.
        vae_use_RoPE: stored verbatim in the YAML (the reference only enables it for the string ``"RoPE"``).
        base_dir: where the tiny base lives (default ``<out_dir>/../<out_dir name>_base``); reused if complete.
        pretrained_path: string written as ``model.pretrained_path`` (default: the absolute ``base_dir``),
            e.g. a repo id when the base is served from a (test) hub cache.
        variants: UNet sub-folders to write: any of ``"unet"``, ``"EMA"``, ``"original"`` (the same weights,
            except ``original`` which is perturbed so that variant selection is observable).
        min_depth, max_depth, normals_frame: optional extra ``model:`` keys (omitted when ``None``).
        cube_padding: ``model.cube_padding`` (``"geometric"`` or ``"reference"``); ``None`` omits the key, like
            the released checkpoints (which then load in reference mode).
    """
    from diffusers import UNet2DConditionModel
    from omegaconf import OmegaConf

    if modality not in ("depth", "normals"):
        raise ValueError(f"modality must be 'depth' or 'normals', got {modality!r}")
    if positional_encoding not in ("RoPE", "uv", "none"):
        raise ValueError(f"positional_encoding must be 'RoPE', 'uv' or 'none', got {positional_encoding!r}")
    out_dir = Path(out_dir)
    if base_dir is None:
        base_dir = out_dir.parent / f"{out_dir.name}_base"
    base_dir = Path(base_dir)
    if not (base_dir / "vae" / "config.json").is_file():
        build_tiny_base(base_dir, seed=seed, face_size=face_size)
    out_dir.mkdir(parents=True, exist_ok=True)

    unet = tiny_unet(positional_encoding, seed, face_size)
    for variant in variants:
        if variant not in ("unet", "EMA", "original"):
            raise ValueError(f"unknown variant {variant!r}; expected 'unet', 'EMA' or 'original'")
        if variant == "original":
            with torch.no_grad():
                perturbed = UNet2DConditionModel.from_config(unet.config)
                perturbed.load_state_dict(unet.state_dict())
                for p in perturbed.parameters():
                    p.mul_(1.01)
            _save_model(perturbed, out_dir / variant)
        else:
            _save_model(unet, out_dir / variant)

    model_cfg: Dict[str, Any] = {
        "modality": modality,
        "pretrained_path": pretrained_path if pretrained_path is not None else str(base_dir.resolve()),
        "checkpoint_path": None,
        "enable_xformers": False,
        "unet_positional_encoding": positional_encoding,
        "vae_use_RoPE": vae_use_RoPE,
        "metric_depth": metric_depth,
        "log_scale": log_scale,
        "face_size": int(face_size),
    }
    if min_depth is not None:
        model_cfg["min_depth"] = float(min_depth)
    if max_depth is not None:
        model_cfg["max_depth"] = float(max_depth)
    if normals_frame is not None:
        model_cfg["normals_frame"] = normals_frame
    if cube_padding is not None:
        if cube_padding not in ("reference", "geometric"):
            raise ValueError(f"cube_padding must be 'reference', 'geometric' or None, got {cube_padding!r}")
        model_cfg["cube_padding"] = cube_padding
    if extra_model_config:
        model_cfg.update(extra_model_config)
    cfg = {
        "seed": seed,
        "model": model_cfg,
        "data": {"dataset": "Synthetic", "scenes": scenes, "batch_size": 1},
    }
    OmegaConf.save(OmegaConf.create(cfg), out_dir / "config.yaml")
    logger.debug("wrote tiny %s checkpoint to %s (base %s)", modality, out_dir, base_dir)
    return out_dir
