"""Architecture of the small embedded default model (``pager/weights/default``).

Same family and code path as the released PaGeR models: a diffusers ``AutoencoderKL`` shared by one
``UNet2DConditionModel`` per modality, cube padding on every convolution, panorama-wide GroupNorm and
attention, RoPE on the sphere in the UNet attention, the empty-prompt embedding as the (constant) text
condition, single-step v-prediction at ``t = T - 1``. Only the widths are small, so that a 1024x512
panorama is predicted in a few seconds on a 2-core CPU:

- VAE: 4 levels (down-sampling x8), widths ``DEFAULT_VAE_CHANNELS``, 4 latent channels, mid-block attention.
- UNet: 3 levels on the latent (x4 more), widths ``DEFAULT_UNET_CHANNELS``, cross-attention (with RoPE)
  on the two coarsest levels and in the mid block; heads of dimension 32.
- Faces of ``DEFAULT_FACE_SIZE`` pixels (face sizes must be multiples of 32).

The configs are plain dicts (``AutoencoderKL(**default_vae_config())``); weights are trained by
``scripts/train_default.sh``.
"""
from __future__ import annotations

from typing import Any, Dict

DEFAULT_FACE_SIZE = 128
DEFAULT_VAE_CHANNELS = (16, 32, 64, 64)
DEFAULT_UNET_CHANNELS = (32, 64, 128)
DEFAULT_CROSS_ATTENTION_DIM = 32
#: Length of the stored empty-prompt embedding ``[1, L, D]`` (a constant condition; no text encoder ships).
DEFAULT_PROMPT_TOKENS = 4
DEFAULT_HEAD_DIM = 32


def default_vae_config(sample_size: int = DEFAULT_FACE_SIZE) -> Dict[str, Any]:
    """``AutoencoderKL`` kwargs of the default model (x8 down-sampling, 4 latent channels)."""
    n = len(DEFAULT_VAE_CHANNELS)
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
        block_out_channels=list(DEFAULT_VAE_CHANNELS),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=sample_size,
        scaling_factor=1.0,
    )


def default_unet_config(in_channels: int = 8, sample_size: int = DEFAULT_FACE_SIZE // 8) -> Dict[str, Any]:
    """``UNet2DConditionModel`` kwargs of the default model (8 inputs: RGB latent + target latent)."""
    heads = [max(1, c // DEFAULT_HEAD_DIM) for c in DEFAULT_UNET_CHANNELS]
    return dict(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        block_out_channels=list(DEFAULT_UNET_CHANNELS),
        layers_per_block=1,
        norm_num_groups=16,
        cross_attention_dim=DEFAULT_CROSS_ATTENTION_DIM,
        attention_head_dim=heads,  # diffusers' legacy name: number of heads per level (SD-2 style)
        use_linear_projection=True,
    )


def build_default_vae(seed: int = 0):
    """A randomly initialised default-architecture ``AutoencoderKL`` (seeded)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**default_vae_config())


def build_default_unet(seed: int = 0, in_channels: int = 8):
    """A randomly initialised default-architecture ``UNet2DConditionModel`` (seeded)."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**default_unet_config(in_channels))
    unet.register_to_config(use_RoPE=True)
    return unet
