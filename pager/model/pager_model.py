"""The PaGeR model: one frozen VAE shared by one single-step UNet per modality, on the six cube faces.

Prediction of one panorama (``B`` panoramas at once, ``N = 6 * B`` faces inside the networks)::

    ERP rgb [B,3,H,W] in [-1,1] --erp_to_cubemap--> faces [B,6,3,F,F]
      --VAE encode (mode) * s--> z_rgb [N,4,h,w]                       (s = VAE scaling factor, 0.18215)
      --UNet(cat(z_rgb, 0, [uv]), t = T-1, empty prompt)--> v [N,4,h,w]  (v-prediction)
      z = sqrt(a) * 0 - sqrt(1 - a) * v                                 (a = alpha_cumprod[T-1], ~0)
      --VAE decode(z / s)--> [N,3,F,F] --cubemap_to_erp--> ERP [B,3,H,W]
    depth: mean of the 3 channels, clamp to [-1, 1], decoded to metres with the checkpoint's range;
    normals: clamp, unit length, converted to our world frame.

Every convolution of VAE and UNets is cube-padded and every GroupNorm / attention layer is made
panorama-wide (the six faces of a panorama form one sample), so batches must hold whole panoramas
(``N % 6 == 0``, faces in the order F, R, B, L, U, D).
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from pager.model.loading import (
    DEFAULT_MODEL_NAME,
    ModalityConfig,
    PathLike,
    load_base,
    load_checkpoint,
    resolve_default_model,
    widen_conv_in,
)

logger = logging.getLogger(__name__)

FACES = 6
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def parse_dtype(dtype: Union[str, torch.dtype, None]) -> torch.dtype:
    """``"fp32"|"float32"|"fp16"|"float16"|"bf16"|"bfloat16"`` or a torch dtype -> torch dtype (None: float32)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
        return dtype
    key = str(dtype).replace("torch.", "").lower()
    if key not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[key]


def default_device() -> torch.device:
    """CUDA when available, then MPS, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def xformers_available() -> bool:
    """Whether the ``xformers`` package can be imported."""
    try:
        import xformers  # noqa: F401
        import xformers.ops  # noqa: F401
    except Exception:
        return False
    return True


_XFORMERS_FALLBACK_WARNED = False


def resolve_attention_backend(enable_xformers: bool) -> str:
    """``"xformers"`` when requested and available; otherwise ``"sdpa"`` (one warning per process if it was requested)."""
    global _XFORMERS_FALLBACK_WARNED
    if enable_xformers:
        if xformers_available():
            return "xformers"
        if not _XFORMERS_FALLBACK_WARNED:
            logger.warning("enable_xformers: xformers is not installed; using PyTorch SDPA attention")
            _XFORMERS_FALLBACK_WARNED = True
    return "sdpa"


def attention_backend_used(requested: str, device: Union[str, torch.device]) -> str:
    """The backend that actually runs: xformers only on CUDA (elsewhere the layers fall back to SDPA)."""
    return "xformers" if requested == "xformers" and torch.device(device).type == "cuda" else ("math" if requested == "math" else "sdpa")


_CPU_FP16_WARNED = False


def device_dtype(dtype: torch.dtype, device: Union[str, torch.device, None]) -> torch.dtype:
    """``dtype`` for ``device``: float16 on the CPU becomes bfloat16 with a warning (PyTorch's CPU float16
    convolutions are far slower); other combinations are unchanged. bfloat16 itself is slower than float32 on CPUs
    without bfloat16 instructions (measured: 62 s vs 15 s of CPU time for ``pager predict`` of the 512x256
    example with one thread), so float32 stays the CLI default."""
    global _CPU_FP16_WARNED
    if dtype == torch.float16 and device is not None and torch.device(device).type == "cpu":
        if not _CPU_FP16_WARNED:
            logger.warning("float16 is very slow on the CPU; using bfloat16 instead (float32 is faster on CPUs without "
                           "bfloat16 instructions, and exact)")
            _CPU_FP16_WARNED = True
        return torch.bfloat16
    return dtype


def _vae_rope_on(value: Any) -> bool:
    from pager.model.panorama_layers import vae_rope_enabled

    return bool(vae_rope_enabled(value))


def _unet_rope_on(pe: str) -> bool:
    from pager.model.panorama_layers import unet_rope_enabled

    return bool(unet_rope_enabled(pe))


class Pager(nn.Module):
    """VAE + per-modality UNets predicting depth / normals of ERP panoramas in one diffusion step.

    Args:
        vae: diffusers ``AutoencoderKL`` (frozen here).
        unets: ``{"depth": UNet2DConditionModel, "normals": ...}`` (one or both).
        configs: ``{modality: ModalityConfig}`` with the same keys.
        empty_prompt_embedding: ``[1, L, D]`` text embedding of the empty prompt (a buffer; no text encoder kept).
        alpha_prod: ``alpha_cumprod[T-1]`` of the zero-terminal-SNR schedule (about 0).
        num_train_timesteps: ``T``; the UNet is called with ``t = T - 1``.
        cube_padding: replace every padded conv by a cube-padded one (``pager.geometry.convert_to_cube_padding``),
            in the mode of the configs' ``cube_padding`` (``"reference"`` for released checkpoints,
            ``"geometric"``); all modalities must agree (one VAE is shared). The mode is
            :attr:`cube_padding_mode`.
        panorama_layers: make GroupNorm / attention panorama-wide and add RoPE per config
            (``pager.model.panorama_layers.make_panorama_wide``).
        enable_xformers: xformers attention if installed, else SDPA with a warning.
    """

    def __init__(
        self,
        vae: nn.Module,
        unets: Mapping[str, nn.Module],
        configs: Mapping[str, ModalityConfig],
        empty_prompt_embedding: Tensor,
        alpha_prod: float = 0.0,
        num_train_timesteps: int = 1000,
        cube_padding: bool = True,
        panorama_layers: bool = True,
        enable_xformers: bool = False,
    ) -> None:
        super().__init__()
        if set(unets) != set(configs):
            raise ValueError(f"unets {sorted(unets)} and configs {sorted(configs)} must name the same modalities")
        if not unets:
            raise ValueError("Pager needs at least one modality UNet")
        for modality, cfg in configs.items():
            if modality != cfg.modality:
                raise ValueError(f"config for {modality!r} says modality={cfg.modality!r}")
            in_ch = unets[modality].config.in_channels
            if in_ch != cfg.unet_in_channels:
                raise ValueError(f"{modality} UNet has {in_ch} input channels, its config needs {cfg.unet_in_channels}")
        if empty_prompt_embedding.dim() != 3 or empty_prompt_embedding.shape[0] != 1:
            raise ValueError(f"empty_prompt_embedding must be [1, L, D], got {tuple(empty_prompt_embedding.shape)}")
        self.vae = vae
        self.vae.requires_grad_(False)
        self.vae.eval()
        self.unets = nn.ModuleDict(dict(unets))
        self.configs: Dict[str, ModalityConfig] = dict(configs)
        self.register_buffer("empty_prompt_embedding", empty_prompt_embedding.detach().clone().float(), persistent=False)
        self.alpha_prod = float(alpha_prod)
        self.num_train_timesteps = int(num_train_timesteps)
        self.latent_scale = float(getattr(vae.config, "scaling_factor", 0.18215) or 0.18215)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.cube_padding = bool(cube_padding)
        pad_modes = {m: c.cube_padding for m, c in self.configs.items()}
        if len(set(pad_modes.values())) > 1:
            raise ValueError(
                "all modality checkpoints must use the same cube padding mode to share one VAE, got "
                + ", ".join(f"{m}: cube_padding={v!r}" for m, v in sorted(pad_modes.items()))
            )
        #: ``"reference"`` or ``"geometric"`` (from the checkpoints' ``model.cube_padding``)
        self.cube_padding_mode = next(iter(pad_modes.values()))
        self.panorama_layers = bool(panorama_layers)
        self.attention_backend = resolve_attention_backend(enable_xformers)

        vae_flags = {_vae_rope_on(c.vae_use_RoPE) for c in self.configs.values()} if panorama_layers else {False}
        if len(vae_flags) > 1:
            raise ValueError("all modality checkpoints must agree on VAE RoPE (vae_use_RoPE) to share one VAE")
        self.vae_rope = vae_flags.pop()
        orders = {c.vae_rope_token_order for c in self.configs.values()}
        self.vae_rope_token_order = orders.pop() if len(orders) == 1 else "reference_vae"

        if cube_padding:
            from pager.geometry.cube_padding import convert_to_cube_padding

            convert_to_cube_padding(self.vae, mode=self.cube_padding_mode)
            for unet in self.unets.values():
                convert_to_cube_padding(unet, mode=self.cube_padding_mode)
        if panorama_layers:
            from pager.model.panorama_layers import make_panorama_wide

            make_panorama_wide(self.vae, rope=self.vae_rope, rope_token_order=self.vae_rope_token_order,
                               attention_backend=self.attention_backend)
            for modality, unet in self.unets.items():
                make_panorama_wide(unet, rope=_unet_rope_on(self.configs[modality].positional_encoding),
                                   rope_token_order="face_row_col", attention_backend=self.attention_backend)
        self._uv_cache: Dict[Tuple[int, str, torch.dtype], Tensor] = {}
        self.memory_format = torch.contiguous_format
        self.compiled = False
        #: settings of the exact low-memory decoder (:meth:`enable_tiled_decoding`), None: untiled
        self.tiled_decoding: Optional["TiledDecoding"] = None
        #: settings of the exact low-memory encoder (:meth:`enable_tiled_encoding`), None: untiled
        self.tiled_encoding: Optional["TiledDecoding"] = None

    def optimize(
        self,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: Optional[str] = None,
        compile_backend: str = "inductor",
    ) -> "Pager":
        """Switch on the inference fast path in place; outputs stay equal up to rounding. Returns ``self``.

        Args:
            channels_last: keep activations and convolution weights in ``torch.channels_last`` (NHWC) memory
                layout, which oneDNN (CPU) and cuDNN (GPU, fp16/bf16 tensor cores) convolve faster; cube
                padding then gathers whole channel vectors.
            compile: ``torch.compile`` the VAE encoder, VAE decoder and UNets (in place, state_dict keys
                unchanged); the first call per face size compiles (minutes on a CPU), later ones are faster.
                Each network is one graph: cube padding, panorama-wide GroupNorm and sphere RoPE enter it as
                custom operators (``pager::cube_pad``, ``pager::panorama_group_norm``,
                ``pager::rotate_tokens``) that run the eager kernels, so they keep their numerics. Needs a C++
                compiler on CPU (inductor) and is not supported on MPS.
            compile_mode: ``torch.compile`` mode (``None``, ``"reduce-overhead"``, ``"max-autotune"``).
            compile_backend: ``torch.compile`` backend (``"inductor"``; ``"aot_eager"`` traces without
                generating code, e.g. to check that a network compiles as one graph).
        Raises:
            RuntimeError: ``compile=True`` on MPS.
        """
        if channels_last:
            self.memory_format = torch.channels_last
            self.vae.to(memory_format=torch.channels_last)
            for unet in self.unets.values():
                unet.to(memory_format=torch.channels_last)
        if compile and not self.compiled:
            if self.device.type == "mps":
                raise RuntimeError("torch.compile is not supported for PaGeR on MPS; run without --compile")
            kwargs: Dict[str, Any] = {"backend": compile_backend}
            if compile_mode is not None:
                kwargs["mode"] = compile_mode
            self.vae.encoder.compile(**kwargs)
            self.vae.decoder.compile(**kwargs)
            for unet in self.unets.values():
                unet.compile(**kwargs)
            self.compiled = True
        return self

    def enable_tiled_decoding(self, enabled: bool = True, band_mb: float = 64.0, band_rows: Optional[int] = None) -> "Pager":
        """Decode with the exact low-memory decoder of :mod:`pager.model.tiled_decoding` (or back, ``enabled=False``).

        Every decoder layer runs in bands of rows over the six faces of one panorama at a time: panorama-wide
        GroupNorm statistics are streamed over bands first and applied per band, cube padding is gathered per
        band, so the output is the untiled decoder's up to float rounding while only a block's input and one
        hidden map are alive (not diffusers' ``enable_tiling``, whose tiles change the function). Used for
        inference (no gradients); training and gradient-enabled calls keep the untiled decoder. The decoder is
        then run eagerly even after ``optimize(compile=True)``. Returns ``self``.

        Args:
            band_mb: target memory of one band in MiB (input band plus output band of a convolution).
            band_rows: fixed rows per band instead of ``band_mb`` (tests).
        Raises:
            ValueError: bad ``band_mb``/``band_rows``, or a VAE decoder layout the tiled decoder does not know.
        """
        from pager.model.tiled_decoding import check_tiled_decoding_support

        self.tiled_decoding = self._tiled_settings(enabled, band_mb, band_rows, check_tiled_decoding_support)
        return self

    def _tiled_settings(self, enabled: bool, band_mb: float, band_rows: Optional[int],
                        check: Callable[[nn.Module], None]) -> Optional["TiledDecoding"]:
        """The settings of a tiled VAE half (None when disabled), after ``check(self.vae)`` accepts the layout."""
        if not enabled:
            return None
        from pager.model.tiled_decoding import TiledDecoding

        cfg = TiledDecoding(band_mb=band_mb, band_rows=band_rows)
        check(self.vae)
        return cfg

    def enable_tiled_encoding(self, enabled: bool = True, band_mb: float = 64.0, band_rows: Optional[int] = None) -> "Pager":
        """Encode with the exact low-memory encoder of :mod:`pager.model.tiled_decoding` (or back, ``enabled=False``).

        The encoder's counterpart of :meth:`enable_tiled_decoding` (same scheme and arguments; stride-2
        downsampling convolutions in bands too): the latents are the untiled encoder's up to float rounding while
        only a block's input and one hidden map are alive. Inference only; the encoder then runs eagerly. At the
        released face size (768) the untiled encoder's full-resolution maps, not the UNet, set the peak memory
        once decoding is tiled. Returns ``self``.

        Raises:
            ValueError: bad ``band_mb``/``band_rows``, or a VAE encoder layout the tiled encoder does not know.
        """
        from pager.model.tiled_decoding import check_tiled_encoding_support

        self.tiled_encoding = self._tiled_settings(enabled, band_mb, band_rows, check_tiled_encoding_support)
        return self

    def enable_tiled_vae(self, enabled: bool = True, band_mb: float = 64.0, band_rows: Optional[int] = None) -> "Pager":
        """:meth:`enable_tiled_encoding` and :meth:`enable_tiled_decoding` together (the ``--tiled_vae`` option):
        exact, bounded-memory VAE passes. Returns ``self``."""
        self.enable_tiled_encoding(enabled, band_mb, band_rows)
        return self.enable_tiled_decoding(enabled, band_mb, band_rows)

    def _layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x

    # ---------------------------------------------------------------------------------------------
    # properties
    # ---------------------------------------------------------------------------------------------
    @property
    def modalities(self) -> Tuple[str, ...]:
        """Modalities this model predicts, e.g. ``("depth", "normals")``."""
        return tuple(self.unets.keys())

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def face_multiple(self) -> int:
        """Face sizes must be multiples of this (VAE and UNet down-sampling factors)."""
        unet_factor = max(2 ** (len(u.config.down_block_types) - 1) for u in self.unets.values())
        return self.vae_scale_factor * unet_factor

    @property
    def default_face_size(self) -> int:
        """Face size of the checkpoints' configs (the largest when they differ)."""
        return max(int(c.face_size) for c in self.configs.values())

    def _check_faces(self, n: int, what: str) -> None:
        if n % FACES:
            raise ValueError(f"{what}: batch of {n} faces is not a multiple of 6 (whole panoramas F,R,B,L,U,D expected)")

    def _check_modality(self, modality: str) -> str:
        modality = "normals" if modality == "normal" else modality
        if modality not in self.unets:
            raise ValueError(f"modality {modality!r} not loaded; this model has {list(self.unets)}")
        return modality

    # ---------------------------------------------------------------------------------------------
    # network steps (inside the networks: [B*6, C, F, F])
    # ---------------------------------------------------------------------------------------------
    def encode_rgb(self, faces: Tensor) -> Tensor:
        """RGB faces ``[B*6, 3, F, F]`` in [-1, 1] -> scaled latents ``[B*6, 4, F/s, F/s]`` (distribution mode).

        Without gradients and after :meth:`enable_tiled_encoding`, the exact banded encoder of
        :mod:`pager.model.tiled_decoding` runs instead of ``vae.encode`` (same latents up to float rounding)."""
        if faces.dim() != 4 or faces.shape[1] != 3:
            raise ValueError(f"encode_rgb expects [B*6, 3, F, F], got {tuple(faces.shape)}")
        self._check_faces(faces.shape[0], "encode_rgb")
        if faces.shape[-1] % self.vae_scale_factor or faces.shape[-2] != faces.shape[-1]:
            raise ValueError(f"face size {tuple(faces.shape[-2:])} must be square and a multiple of {self.vae_scale_factor}")
        faces = self._layout(faces.to(device=self.device, dtype=self.dtype))
        if self.tiled_encoding is not None and not torch.is_grad_enabled():
            from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

            from pager.model.tiled_decoding import tiled_encode

            posterior = DiagonalGaussianDistribution(tiled_encode(self.vae, faces, self.tiled_encoding))
        else:
            posterior = self.vae.encode(faces).latent_dist
        return posterior.mode() * self.latent_scale

    def uv_encoding(self, latent_size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """The ``uv`` positional channels on the latent cube faces: ``[6, 2, h, h]`` (ERP u, v in [-1, 1])."""
        key = (int(latent_size), str(device), dtype)
        if key not in self._uv_cache:
            from pager.geometry.cubemap import uv_positional_encoding

            pe = uv_positional_encoding(int(latent_size))
            self._uv_cache[key] = pe.to(device=device, dtype=dtype)
        return self._uv_cache[key]

    def predict_latent(self, modality: str, rgb_latent: Tensor) -> Tensor:
        """One diffusion step: RGB latents ``[B*6, 4, h, w]`` -> target latent estimate (same shape)."""
        modality = self._check_modality(modality)
        self._check_faces(rgb_latent.shape[0], "predict_latent")
        unet = self.unets[modality]
        dtype = next(unet.parameters()).dtype
        rgb_latent = rgb_latent.to(dtype)
        n = rgb_latent.shape[0]
        parts = [rgb_latent, torch.zeros_like(rgb_latent)]
        if self.configs[modality].positional_encoding == "uv":
            pe = self.uv_encoding(rgb_latent.shape[-1], rgb_latent.device, dtype)
            parts.append(pe.repeat(n // FACES, 1, 1, 1))
        x = self._layout(torch.cat(parts, dim=1))
        t = torch.full((n,), self.num_train_timesteps - 1, device=x.device, dtype=torch.long)
        cond = self.empty_prompt_embedding.to(device=x.device, dtype=dtype).expand(n, -1, -1)
        v = unet(x, t, encoder_hidden_states=cond, return_dict=False)[0]
        # z = sqrt(a) * z_t - sqrt(1 - a) * v with the zero target latent z_t = 0.
        return -math.sqrt(max(1.0 - self.alpha_prod, 0.0)) * v

    def decode(self, latent: Tensor) -> Tensor:
        """Scaled latents ``[B*6, 4, h, w]`` -> decoded faces ``[B*6, 3, F, F]`` (roughly in [-1, 1]).

        Without gradients and after :meth:`enable_tiled_decoding`, the exact banded decoder of
        :mod:`pager.model.tiled_decoding` runs instead of ``vae.decode`` (same output up to float rounding)."""
        self._check_faces(latent.shape[0], "decode")
        latent = self._layout(latent.to(self.dtype))
        if self.tiled_decoding is not None and not torch.is_grad_enabled():
            from pager.model.tiled_decoding import tiled_decode

            return tiled_decode(self.vae, latent / self.latent_scale, self.tiled_decoding)
        return self.vae.decode(latent / self.latent_scale, return_dict=False)[0]

    def forward_faces(self, rgb_faces: Tensor, modality: str) -> Tensor:
        """Differentiable prediction on cube faces: ``[B, 6, 3, F, F]`` in [-1, 1] -> decoded ``[B, 6, 3, F, F]``.

        The VAE encoder runs without gradients when its parameters are frozen; gradients flow through the
        UNet and the VAE decoder (training in pixel space).
        """
        if rgb_faces.dim() != 5 or rgb_faces.shape[1] != FACES or rgb_faces.shape[2] != 3:
            raise ValueError(f"forward_faces expects [B, 6, 3, F, F], got {tuple(rgb_faces.shape)}")
        b = rgb_faces.shape[0]
        flat = rgb_faces.flatten(0, 1)
        need_grad = torch.is_grad_enabled() and (flat.requires_grad or any(p.requires_grad for p in self.vae.encoder.parameters()))
        with torch.set_grad_enabled(need_grad):
            latent = self.encode_rgb(flat)
        pred = self.decode(self.predict_latent(modality, latent))
        return pred.unflatten(0, (b, FACES))

    def forward(self, rgb_faces: Tensor, modality: str) -> Tensor:  # noqa: D401 - nn.Module entry point
        """Same as :meth:`forward_faces`."""
        return self.forward_faces(rgb_faces, modality)

    # ---------------------------------------------------------------------------------------------
    # panorama in, geometry out
    # ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(
        self,
        rgb_erp: Tensor,
        modalities: Optional[Sequence[str]] = None,
        face_size: Optional[int] = None,
        output_size: Optional[Tuple[int, int]] = None,
        stitching: str = "exact",
        seam_blend: bool = False,
    ) -> Dict[str, Tensor]:
        """Predict geometry of ERP panoramas ``[B, 3, H, W]`` in [-1, 1] (any device / float dtype), or uint8
        ``[B, 3, H, W]`` images in 0..255 (read in place: only the face pixels are converted to [-1, 1], so a large
        panorama is never held as float; NCHW or channels-last).

        ``stitching``: ``"exact"`` (default; our ERP<->cube resampling, cube->ERP the exact inverse of ERP->cube)
        or ``"reference"`` (the original PaGeR code's pytorch360convert 0.2.3 resampling, to reproduce its
        published numbers; the output width must be a multiple of 4); see ``pager.geometry.STITCHING_MODES``.

        ``seam_blend``: also predict on a second cube rotated by
        :data:`pager.geometry.seam_blend.SEAM_BLEND_ROTATION` (both passes in one batch, about twice the
        time and activation memory) and blend the two in the ERP with weights that vanish on each cube's face
        borders (:mod:`pager.geometry.seam_blend`): hides the face borders of checkpoints whose predictions
        step there (e.g. those trained with ``reference`` cube padding). Relative depth of the second pass is
        scaled to the first (median log ratio); metric depth is not rescaled. Needs ``stitching="exact"``.

        Returns float32 tensors on the model's device, at ``output_size`` (default ``(H, W)``):

        - ``"depth"`` ``[B, H, W]``: metres for metric models, else relative (log models: up to a scale),
          decoded with the checkpoint's ``min_depth``/``max_depth``;
        - ``"depth_mask"`` ``[B, H, W]`` bool: depth strictly inside the range (not saturated at
          ``0.99 max_depth`` / ``1.01 min_depth``) and finite; never multiplied into ``"depth"``;
        - ``"depth_values"`` ``[B, H, W]``: the raw network output in [-1, 1];
        - ``"normals"`` ``[B, 3, H, W]``: unit vectors in PaGeR's world frame (x forward, y up, z right), stored
          channels-last (``normals.permute(0, 2, 3, 1)`` is contiguous);
        - ``"normals_mask"`` ``[B, H, W]`` bool: finite with a non-degenerate length before normalisation.

        Memory: the outputs are allocated once and filled band by band of ERP rows
        (:func:`pager.geometry.cubemap.stitch_bands`): cube->ERP resampling, depth decoding, normalisation and
        seam blending never hold more than one band of full-size intermediates (``seam_blend`` also keeps each
        pass's depth, 5 bytes per pixel and pass, for the global scale alignment).
        """
        from pager.geometry.cubemap import check_stitching, erp_to_cubemap, stitch_bands

        if rgb_erp.dim() == 3:
            rgb_erp = rgb_erp.unsqueeze(0)
        if rgb_erp.dim() != 4 or rgb_erp.shape[1] != 3:
            raise ValueError(f"predict expects rgb_erp [B, 3, H, W], got {tuple(rgb_erp.shape)}")
        if not (rgb_erp.dtype.is_floating_point or rgb_erp.dtype == torch.uint8):
            raise ValueError(f"predict expects float rgb_erp in [-1, 1] or uint8 in 0..255, got {rgb_erp.dtype}")
        modalities = list(self.modalities if modalities is None else modalities)
        modalities = [self._check_modality(m) for m in modalities]
        face_size = int(self.default_face_size if face_size is None else face_size)  # 0 is an error, not "default"
        if face_size <= 0 or face_size % self.face_multiple:
            raise ValueError(f"face_size must be a positive multiple of {self.face_multiple}, got {face_size}")
        b, _, h, w = rgb_erp.shape
        out_h, out_w = output_size if output_size is not None else (h, w)
        check_stitching(stitching, out_w)
        if seam_blend and stitching != "exact":
            raise ValueError("seam_blend needs stitching='exact' (the reference stitching cannot resample a rotated cube)")
        device = self.device
        if rgb_erp.dtype == torch.uint8:
            erp = rgb_erp.to(device=device)  # sampled in place; the faces are mapped to [-1, 1] below
        else:
            erp = rgb_erp.to(device=device, dtype=torch.float32)
        rotations = [None]
        if seam_blend:
            from pager.geometry.seam_blend import SEAM_BLEND_ROTATION

            rotations.append(SEAM_BLEND_ROTATION)
        # every pass's cubes in one batch: [P * B, 6, 3, F, F] (pass-major)
        # a uint8 panorama: the values read are mapped as the float path's (rgb / 255) * 2 - 1, bit for bit
        to = (-1.0, 1.0) if erp.dtype == torch.uint8 else None
        faces = torch.cat([erp_to_cubemap(erp, face_size, mode="bilinear", stitching=stitching, rotation=r, uint8_to=to)
                           for r in rotations])
        del erp
        latent = self.encode_rgb(faces.flatten(0, 1).to(self.dtype))
        del faces
        bands = stitch_bands(out_h, out_w)
        out: Dict[str, Tensor] = {}
        for modality in modalities:
            decoded = self.decode(self.predict_latent(modality, latent)).float().unflatten(0, (len(rotations) * b, FACES))
            cubes = decoded.mean(dim=2, keepdim=True) if modality == "depth" else decoded
            cubes = [cubes[k * b:(k + 1) * b] for k in range(len(rotations))]
            if modality == "depth":
                res = {"depth": torch.empty(b, out_h, out_w, device=device),
                       "depth_values": torch.empty(b, out_h, out_w, device=device),
                       "depth_mask": torch.empty(b, out_h, out_w, dtype=torch.bool, device=device)}
            else:
                res = {"normals": torch.empty(b, out_h, out_w, 3, device=device).permute(0, 3, 1, 2),
                       "normals_mask": torch.empty(b, out_h, out_w, dtype=torch.bool, device=device)}
            if len(rotations) == 1:
                for rows in bands:
                    for key, value in self._stitch_rows(modality, cubes[0], None, (out_h, out_w), stitching, rows).items():
                        res[key][..., rows[0]:rows[1], :] = value
            else:
                self._blend_passes(modality, cubes, rotations, (out_h, out_w), bands, res)
            out.update(res)
        return out

    def _stitch_rows(self, modality: str, cube: Tensor, rotation: Optional[Tensor], size: Tuple[int, int],
                     stitching: str, rows: Tuple[int, int]) -> Dict[str, Tensor]:
        """One pass's outputs on ERP rows ``rows`` from its cube (depth: the channel mean ``[B, 6, 1, F, F]``)."""
        from pager.geometry.cubemap import cubemap_to_erp
        from pager.geometry.depth_encoding import VALID_MAX_FACTOR, VALID_MIN_FACTOR, decode_depth

        cfg = self.configs[modality]
        erp = cubemap_to_erp(cube, size[0], size[1], mode="bilinear", stitching=stitching, rotation=rotation, rows=rows)
        if modality == "depth":
            values = erp[:, 0].clamp(-1.0, 1.0)
            depth = decode_depth(values, cfg.min_depth, cfg.max_depth, log_scale=cfg.log_scale).float()
            mask = (torch.isfinite(depth) & (depth < VALID_MAX_FACTOR * cfg.max_depth)
                    & (depth > VALID_MIN_FACTOR * cfg.min_depth))
            return {"depth": depth, "depth_values": values, "depth_mask": mask}
        erp_n = erp.clamp(-1.0, 1.0)
        norm = erp_n.norm(dim=1, keepdim=True)
        normals = erp_n / norm.clamp_min(1e-6)
        if cfg.normals_frame == "reference":
            normals = normals * normals.new_tensor([1.0, 1.0, -1.0]).view(1, 3, 1, 1)
        mask = torch.isfinite(normals).all(dim=1) & (norm[:, 0] > 1e-3)
        return {"normals": normals, "normals_mask": mask}

    def _blend_passes(self, modality: str, cubes: Sequence[Tensor], rotations: Sequence[Optional[Tensor]],
                      size: Tuple[int, int], bands: Sequence[Tuple[int, int]], res: Dict[str, Tensor]) -> None:
        """Blend the cube passes (``seam_blend``) band by band into the outputs ``res``, see
        :mod:`pager.geometry.seam_blend`. Relative depth needs the median log ratio of the passes over the whole
        panorama first: a first sweep keeps every pass's depth and mask (and the valid log ratios) for it."""
        from pager.geometry.depth_encoding import encode_depth
        from pager.geometry.seam_blend import blend_depth, blend_masks, blend_normals, erp_seam_weights, log_ratios, lower_median

        cfg = self.configs[modality]
        key = "depth" if modality == "depth" else "normals"
        p, b = len(rotations), cubes[0].shape[0]

        def weights(rows: Tuple[int, int]) -> Tensor:
            return torch.stack([erp_seam_weights(size[0], size[1], r, device=self.device, dtype=torch.float32, rows=rows)
                                for r in rotations])

        if modality != "depth":
            for rows in bands:
                passes = [self._stitch_rows(modality, c, r, size, "exact", rows) for c, r in zip(cubes, rotations)]
                w = weights(rows)
                masks = torch.stack([q["normals_mask"] for q in passes])
                mask = blend_masks(masks, w)
                normals = blend_normals(torch.stack([q["normals"] for q in passes]), w, masks, rotations=rotations)
                res["normals"][..., rows[0]:rows[1], :] = normals
                res["normals_mask"][..., rows[0]:rows[1], :] = mask & (normals.norm(dim=1) > 0.5)
            return
        depths = torch.empty(p, b, size[0], size[1], device=self.device)
        masks = torch.empty(p, b, size[0], size[1], dtype=torch.bool, device=self.device)
        ratios = [[[] for _ in range(b)] for _ in range(p)]
        for rows in bands:
            passes = [self._stitch_rows(modality, c, r, size, "exact", rows) for c, r in zip(cubes, rotations)]
            d = torch.stack([q["depth"] for q in passes])
            m = torch.stack([q["depth_mask"] for q in passes])
            depths[..., rows[0]:rows[1], :], masks[..., rows[0]:rows[1], :] = d, m
            if not cfg.metric_depth:
                diff = log_ratios(d, m)
                for i in range(1, p):
                    for j in range(b):
                        ratios[i][j].append(diff[i, j][~torch.isnan(diff[i, j])])
        scale = torch.ones(p, b, device=self.device)
        if not cfg.metric_depth:  # align_log_scale over the whole panorama: exp(median log ratio), 1 when none
            for i in range(1, p):
                for j in range(b):
                    med = lower_median(torch.cat(ratios[i][j])) if ratios[i][j] else torch.tensor(float("nan"))
                    ratios[i][j] = []
                    scale[i, j] = torch.exp(torch.nan_to_num(med, nan=0.0))
        for rows in bands:
            sl = (..., slice(rows[0], rows[1]), slice(None))
            w = weights(rows)
            m = masks[sl]
            depth = blend_depth(depths[sl] * scale[:, :, None, None], w, m, align=False).clamp(cfg.min_depth, cfg.max_depth)
            res["depth"][sl] = depth
            res["depth_values"][sl] = encode_depth(depth, cfg.min_depth, cfg.max_depth, log_scale=cfg.log_scale)
            res["depth_mask"][sl] = blend_masks(m, w) & torch.isfinite(depth)

    # ---------------------------------------------------------------------------------------------
    # construction
    # ---------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: Union[PathLike, Mapping[str, PathLike], None] = DEFAULT_MODEL_NAME,
        modality: Optional[str] = None,
        variant: Optional[str] = None,
        torch_dtype: Union[str, torch.dtype, None] = torch.float32,
        device: Union[str, torch.device, None] = None,
        allow_pickle: bool = False,
        enable_xformers: bool = False,
        cube_padding: bool = True,
        panorama_layers: bool = True,
        overrides: Optional[Mapping[str, Any]] = None,
    ) -> "Pager":
        """Load a model from released-layout checkpoints (local folder or Hugging Face repo id).

        Args:
            path_or_repo_id: one checkpoint, or ``{"depth": path1, "normals": path2}`` (one VAE shared),
                or ``"default"`` / None for the embedded default model.
            modality: check that a single checkpoint is of this modality.
            variant: ``"EMA"``, ``"original"`` or None (``unet/``, then ``EMA/``, then ``original/``).
            torch_dtype: float32 / float16 / bfloat16.
            device: default CUDA, then MPS, then CPU.
            allow_pickle: also accept ``.bin`` pickle weights (never needed for released checkpoints).
            overrides: model-loading values a caller (CLI) asked for; they are ignored with a warning,
                since the checkpoint's YAML decides.
        """
        dtype = parse_dtype(torch_dtype)
        if path_or_repo_id is None or (isinstance(path_or_repo_id, str) and path_or_repo_id == DEFAULT_MODEL_NAME):
            sources: Dict[str, PathLike] = dict(resolve_default_model())
            if modality is not None:
                modality = "normals" if modality == "normal" else modality
                if modality not in sources:
                    raise FileNotFoundError(f"the embedded default model has no {modality!r} checkpoint")
                sources = {modality: sources[modality]}
        elif isinstance(path_or_repo_id, Mapping):
            sources = dict(path_or_repo_id)
        else:
            sources = {"__single__": path_or_repo_id}
        loaded = {}
        for key, src in sources.items():
            want = modality if key == "__single__" else key
            ck = load_checkpoint(src, modality=want, variant=variant, allow_pickle=allow_pickle, overrides=overrides)
            if ck.config.modality in loaded:
                raise ValueError(f"two checkpoints for modality {ck.config.modality!r}")
            loaded[ck.config.modality] = ck
        bases = {}
        for ck in loaded.values():
            base = str(ck.config.raw.get("model", {}).get("pretrained_path") or "")
            if not base:
                raise ValueError(f"checkpoint {ck.config.source!r}: config.yaml has no model.pretrained_path")
            bases[ck.config.modality] = (base, ck.folder)
        distinct = {b for b, _ in bases.values()}
        if len(distinct) > 1:
            logger.warning("checkpoints name different base models %s; using the VAE of %r", sorted(distinct), next(iter(bases.values()))[0])
        base_path, base_folder = next(iter(bases.values()))
        vae, emb, alpha, T = load_base(base_path, checkpoint_folder=base_folder, allow_pickle=allow_pickle)
        model = cls(
            vae=vae,
            unets={m: ck.unet for m, ck in loaded.items()},
            configs={m: ck.config for m, ck in loaded.items()},
            empty_prompt_embedding=emb,
            alpha_prod=alpha,
            num_train_timesteps=T,
            cube_padding=cube_padding,
            panorama_layers=panorama_layers,
            enable_xformers=enable_xformers,
        )
        target = torch.device(device) if device is not None else default_device()
        model.to(device=target, dtype=device_dtype(dtype, target))
        model.eval()
        return model

    @classmethod
    def from_base(
        cls,
        pretrained_path: PathLike,
        modality: str = "depth",
        positional_encoding: str = "RoPE",
        vae_use_RoPE: Any = False,
        metric_depth: bool = False,
        log_scale: bool = True,
        min_depth: float = 0.01,
        max_depth: float = 75.0,
        normals_frame: str = "pager",
        face_size: int = 768,
        unet_checkpoint: Optional[PathLike] = None,
        allow_pickle: bool = False,
        enable_xformers: bool = False,
        cube_padding: bool = True,
        panorama_layers: bool = True,
        cube_padding_mode: str = "reference",
    ) -> "Pager":
        """A trainable model starting from a base (``<base>/unet``, or ``unet_checkpoint``'s UNet folder).

        For ``positional_encoding="uv"`` the UNet's ``conv_in`` is widened to 10 inputs, new weights zero.
        ``cube_padding_mode`` (``"reference"``, the default, which keeps the behaviour of the released
        checkpoints, or ``"geometric"``) is stored in the config (``model.cube_padding``); the trainer passes
        the training config's ``model.cube_padding`` (``geometric`` in ``base.yaml``).
        Float32 on CPU; move it with ``.to()``.
        """
        from pager.model.loading import find_unet_folder, load_unet, resolve_folder

        cfg = ModalityConfig(
            modality="normals" if modality == "normal" else modality, positional_encoding=positional_encoding,
            vae_use_RoPE=vae_use_RoPE, metric_depth=metric_depth, log_scale=log_scale, min_depth=min_depth,
            max_depth=max_depth, normals_frame=normals_frame, face_size=face_size, cube_padding=cube_padding_mode,
            source=str(unet_checkpoint or pretrained_path),
            raw={"model": {"pretrained_path": str(pretrained_path)}},
        )
        if unet_checkpoint is not None:
            folder = resolve_folder(unet_checkpoint, "UNet checkpoint", allow_pickle=allow_pickle)
            unet_folder = find_unet_folder(folder, None) if not (folder / "config.json").is_file() else folder
        else:
            base_folder = resolve_folder(pretrained_path, "base model", allow_patterns=["unet/*"], allow_pickle=allow_pickle)
            unet_folder = base_folder / "unet"
        unet = load_unet(unet_folder, None, allow_pickle=allow_pickle, what=f"UNet of {unet_folder}")
        if unet.config.in_channels < cfg.unet_in_channels:
            widen_conv_in(unet, cfg.unet_in_channels)
        elif unet.config.in_channels != cfg.unet_in_channels:
            raise ValueError(f"UNet at {unet_folder} has {unet.config.in_channels} inputs; {positional_encoding} needs {cfg.unet_in_channels}")
        vae, emb, alpha, T = load_base(str(pretrained_path), allow_pickle=allow_pickle)
        return cls(vae=vae, unets={cfg.modality: unet}, configs={cfg.modality: cfg}, empty_prompt_embedding=emb,
                   alpha_prod=alpha, num_train_timesteps=T, cube_padding=cube_padding,
                   panorama_layers=panorama_layers, enable_xformers=enable_xformers)


    def checkpoint_config(self, modality: str, extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """The ``config.yaml`` content (``model:`` section + ``extra`` sections) describing one modality."""
        modality = self._check_modality(modality)
        cfg = self.configs[modality]
        raw_model = dict((cfg.raw or {}).get("model", {}) or {})
        model = {
            "modality": cfg.modality,
            "pretrained_path": raw_model.get("pretrained_path"),
            "unet_positional_encoding": cfg.positional_encoding,
            "vae_use_RoPE": cfg.vae_use_RoPE,
            "metric_depth": bool(cfg.metric_depth),
            "log_scale": bool(cfg.log_scale),
            "min_depth": float(cfg.min_depth),
            "max_depth": float(cfg.max_depth),
            "normals_frame": cfg.normals_frame,
            "face_size": int(cfg.face_size),
            "vae_rope_token_order": cfg.vae_rope_token_order,
            "cube_padding": cfg.cube_padding,
        }
        out: Dict[str, Any] = {k: v for k, v in dict(extra or {}).items() if k != "model"}
        model.update({k: v for k, v in dict((extra or {}).get("model", {}) or {}).items() if k not in model or model[k] is None})
        out["model"] = model
        return out

    def save_checkpoint(self, out_dir: PathLike, modality: str, variant: str = "unet",
                        extra_config: Optional[Mapping[str, Any]] = None, overwrite: bool = False) -> "Path":
        """Write one modality in the released layout: ``<out_dir>/<variant>/`` (safetensors UNet) + ``config.yaml``.

        ``variant`` is ``"unet"``, ``"EMA"`` or ``"original"``. The UNet folder is written atomically (built under
        a temporary name, then renamed); an existing one raises ``FileExistsError`` unless ``overwrite``.
        ``config.yaml`` (atomic) holds :meth:`checkpoint_config`, so ``Pager.from_pretrained(out_dir)`` rebuilds
        exactly this model (the base named by ``pretrained_path`` must stay reachable).
        """
        from pathlib import Path

        from omegaconf import OmegaConf

        from pager.io_utils import atomic_directory, atomic_save

        if variant not in ("unet", "EMA", "original"):
            raise ValueError(f"variant must be 'unet', 'EMA' or 'original', got {variant!r}")
        modality = self._check_modality(modality)
        out_dir = Path(out_dir)
        cfg = self.checkpoint_config(modality, extra_config)
        if not cfg["model"].get("pretrained_path"):
            raise ValueError("the model's config has no pretrained_path (the base it was built from); pass it in extra_config['model']")
        unet = self.unets[modality]
        with atomic_directory(out_dir / variant, overwrite=overwrite) as tmp:
            # plain nn.Conv2d / GroupNorm keys are unchanged by cube padding and panorama layers
            unet.save_pretrained(str(tmp), safe_serialization=True)
        atomic_save(out_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(cfg)).encode("utf-8"))
        return out_dir


def iter_modalities(value: Union[str, Iterable[str], None]) -> Tuple[str, ...]:
    """Normalise a modality argument (``"depth"``, ``["depth", "normals"]``, ``"normal"``) to a tuple."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    out = []
    for m in value:
        m = "normals" if m == "normal" else m
        if m not in ("depth", "normals"):
            raise ValueError(f"unknown modality {m!r}; expected 'depth' or 'normals'")
        if m not in out:
            out.append(m)
    return tuple(out)
