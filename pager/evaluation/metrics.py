"""Evaluation metrics of PaGeR: batched, masked torch functions (tensors in, per-image numbers out).

Every metric is computed **per image** over its valid pixels and returned as a tensor ``[B]``
(one value per image, ``nan`` where an image has no valid pixel); :func:`average_over_images`
then takes the plain mean over the images, which is how the reference reports its tables.
Pixels are weighted uniformly unless ``latitude_weighting=True``, which weights every ERP row by
``cos(latitude)`` of its pixel centre (the solid angle it covers); the reference (and the paper)
weights uniformly.

Shapes: depth maps are ``[B, 1, H, W]``, ``[B, H, W]`` or ``[H, W]`` (metres); normals
``[B, 3, H, W]`` or ``[3, H, W]`` (unit vectors, any common frame); masks are boolean with the
depth-map shape (a singleton channel is accepted). Inputs of any float dtype and device are
accepted; the arithmetic runs in float32 (or float64 when given float64) on the input's device.

Families:
    * depth: :func:`depth_metrics` (AbsRel, SqRel, RMSE, RMSE-log, log10, SILog, delta1/2/3);
      :func:`align_prediction` wraps the geometry package's alignment (``metric``/``none``,
      ``scale``, ``scale_and_shift``, ``median``, ``log_shift``).
    * normals: :func:`normals_metrics` (mean/median/RMSE angle, % within 5/7.5/11.25/22.5/30 deg).
    * depth edges: :func:`sobel_edges`, :func:`edge_metrics` (depth-boundary-error accuracy and
      completeness after Koch et al., ECCV workshops 2018; edge precision and recall).
    * cube seams: :func:`erp_face_index`, :func:`seam_metrics` (defect density, prevalence,
      severity of discontinuities along cube-face borders of an ERP prediction).
    * invalid regions: :func:`invalid_mask_metrics` (IoU, precision, recall of the pixels a prediction
      marks invalid -- sky, beyond range -- against those the ground truth marks invalid).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ALIGNMENT_TYPES",
    "DEPTH_METRICS",
    "NORMALS_METRICS",
    "NORMALS_THRESHOLDS_DEG",
    "EDGE_METRICS",
    "SEAM_METRICS",
    "latitude_weights",
    "align_prediction",
    "depth_metrics",
    "normals_metrics",
    "sobel_edges",
    "edge_metrics",
    "erp_face_index",
    "seam_pairs",
    "seam_metrics",
    "INVALID_MASK_METRICS",
    "invalid_mask_metrics",
    "average_over_images",
]

from pager.evaluation.names import ALIGNMENT_TYPES  # noqa: E402  (accepted by align_prediction; torch-free home)

#: Keys of :func:`depth_metrics`, in table order.
DEPTH_METRICS: tuple[str, ...] = (
    "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "delta1", "delta2", "delta3",
)
#: Angular thresholds (degrees) of the "% within" normals metrics.
NORMALS_THRESHOLDS_DEG: tuple[float, ...] = (5.0, 7.5, 11.25, 22.5, 30.0)
#: Keys of :func:`normals_metrics`, in table order.
NORMALS_METRICS: tuple[str, ...] = ("mean", "median", "rmse") + tuple(
    f"within_{t:g}" for t in NORMALS_THRESHOLDS_DEG
)
#: Keys of :func:`edge_metrics`, in table order.
EDGE_METRICS: tuple[str, ...] = ("dbe_accuracy", "dbe_completeness", "edge_precision", "edge_recall")
#: Keys of :func:`seam_metrics`, in table order.
SEAM_METRICS: tuple[str, ...] = (
    "seam_defect_density", "seam_prevalence", "seam_severity", "seam_mean_excess", "seam_gradient_ratio",
)

#: Keys of :func:`invalid_mask_metrics`, in table order.
INVALID_MASK_METRICS: tuple[str, ...] = ("invalid_iou", "invalid_precision", "invalid_recall")

#: Floor (metres) applied to the prediction inside ratio- and log-based depth metrics.
PRED_FLOOR = 1e-6


# --------------------------------------------------------------------------------------------
# shape helpers
# --------------------------------------------------------------------------------------------
def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _as_maps(x: torch.Tensor, name: str) -> torch.Tensor:
    """``[H, W]``, ``[B, H, W]`` or ``[B, 1, H, W]`` -> ``[B, H, W]``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 2:
        return x.unsqueeze(0)
    if x.ndim == 3:
        return x
    if x.ndim == 4 and x.shape[1] == 1:
        return x[:, 0]
    raise ValueError(f"{name}: expected a map of shape [H, W], [B, H, W] or [B, 1, H, W], got {tuple(x.shape)}")


def _as_mask(mask: torch.Tensor | None, like: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """Mask in any accepted map shape -> bool ``[B, H, W]`` matching ``like`` (``[B, H, W]``)."""
    if mask is None:
        return torch.ones_like(like, dtype=torch.bool)
    m = _as_maps(mask, name)
    if m.dtype != torch.bool:
        m = m != 0
    if m.shape[-2:] != like.shape[-2:] or m.shape[0] not in (1, like.shape[0]):
        raise ValueError(f"{name}: shape {tuple(mask.shape)} does not match the maps {tuple(like.shape)}")
    return m.to(like.device).expand_as(like)


def _as_vectors(x: torch.Tensor, name: str) -> torch.Tensor:
    """``[3, H, W]`` or ``[B, 3, H, W]`` -> ``[B, 3, H, W]``."""
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name}: expected normals of shape [3, H, W] or [B, 3, H, W], got {tuple(x.shape)}")
    return x


def latitude_weights(height: int, width: int, device: torch.device | str | None = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``cos(latitude)`` of every ERP pixel centre, ``[H, W]`` (row ``i``: ``phi = pi/2 - pi (i+0.5)/H``)."""
    i = torch.arange(height, device=device, dtype=torch.float64)
    phi = math.pi / 2 - math.pi * (i + 0.5) / height
    return torch.cos(phi).clamp_min(0.0).to(dtype)[:, None].expand(height, width)


def _pixel_weights(mask: torch.Tensor, latitude_weighting: bool, dtype: torch.dtype) -> torch.Tensor:
    """Per-pixel weights ``[B, H, W]``: 1 (or ``cos`` latitude) on valid pixels, 0 elsewhere."""
    w = mask.to(dtype)
    if latitude_weighting:
        w = w * latitude_weights(mask.shape[-2], mask.shape[-1], mask.device, dtype)
    return w


def _wmean(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Weighted mean ``sum(w x) / sum(w)`` over the pixels of each image -> ``[B]`` (``nan`` if ``sum(w) = 0``).

    ``x`` must be finite wherever it is multiplied (callers sanitise invalid pixels first). With 0/1
    weights the numerator and denominator of an all-true indicator are the same sum, so a fraction
    of all valid pixels comes out exactly 1.
    """
    den = w.sum(dim=(-2, -1))
    num = (w * x).sum(dim=(-2, -1))
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.full_like(den, float("nan")))


# --------------------------------------------------------------------------------------------
# depth
# --------------------------------------------------------------------------------------------
def align_prediction(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None,
                     alignment: str, return_coefficients: bool = False
                     ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Align a depth prediction to the ground truth over the valid pixels, per image.

    ``pred``, ``gt``: ``[B, 1, H, W]`` / ``[B, H, W]`` / ``[H, W]`` metres; returns the aligned
    prediction in the shape of ``pred``. ``alignment``: ``metric``/``none`` (unchanged),
    ``scale`` (least squares ``s``), ``scale_and_shift`` (least squares ``s, t``), ``median``
    (``s = median(gt) / median(pred)``), ``log_shift`` (``exp(mean(log gt - log pred))`` as scale).
    With ``return_coefficients`` also returns ``scale [B]`` and ``shift [B]`` with
    ``aligned = scale * pred + shift``. Delegates to :func:`pager.geometry.alignment.align_depth`
    (which raises ``ValueError`` for an empty mask or, for ``log_shift``, non-positive depth).
    """
    if alignment not in ALIGNMENT_TYPES:
        raise ValueError(f"alignment_type: unknown {alignment!r}, expected one of {', '.join(ALIGNMENT_TYPES)}")
    p = _as_maps(pred, "pred")
    if alignment in ("metric", "none"):
        if not return_coefficients:
            return pred
        one = torch.ones(p.shape[0], dtype=p.dtype, device=p.device)
        return pred, one, torch.zeros_like(one)
    from pager.geometry.alignment import align_depth  # geometry owns the alignment maths

    g = _as_maps(gt, "gt")
    m = _as_mask(mask, g)
    aligned, scale, shift = align_depth(p.unsqueeze(1), g.unsqueeze(1), m.unsqueeze(1), method=alignment,
                                        return_coefficients=True)
    aligned = aligned.reshape(pred.shape)
    return (aligned, scale, shift) if return_coefficients else aligned


def depth_metrics(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None, *,
                  latitude_weighting: bool = False) -> dict[str, torch.Tensor]:
    """Standard depth metrics per image over the valid pixels; each value is a tensor ``[B]``.

    ``pred``, ``gt``: depth in metres (``[B, 1, H, W]``, ``[B, H, W]`` or ``[H, W]``); ``mask``:
    bool of the same shape (default: ``gt > 0``). With weights ``w`` (uniform or ``cos`` latitude,
    normalised to sum 1 over the valid pixels of each image), ``p`` the prediction floored at
    ``PRED_FLOOR`` for the log and ratio terms, and ``e = log p - log gt``:

    * ``abs_rel  = sum w |pred - gt| / gt``
    * ``sq_rel   = sum w (pred - gt)^2 / gt`` (the reference divides by ``gt``, not ``gt^2``)
    * ``rmse     = sqrt(sum w (pred - gt)^2)`` (metres)
    * ``rmse_log = sqrt(sum w e^2)``
    * ``log10    = sum w |log10 p - log10 gt|``
    * ``silog    = 100 sqrt(sum w e^2 - (sum w e)^2)``
    * ``delta_k  = sum w [max(p/gt, gt/p) < 1.25^k]`` for ``k = 1, 2, 3`` (fraction in [0, 1])
    """
    p = _as_maps(pred, "pred")
    g = _as_maps(gt, "gt")
    if p.shape[-2:] != g.shape[-2:] or p.shape[0] not in (1, g.shape[0]):
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must have the same shape")
    dt = _compute_dtype(g)
    g = g.to(dt)
    p = p.to(device=g.device, dtype=dt).expand_as(g)
    m = _as_mask(mask, g) if mask is not None else (g > 0)
    m = m & (g > 0) & torch.isfinite(g)
    w = _pixel_weights(m, latitude_weighting, dt)
    g_safe = torch.where(m, g, torch.ones_like(g))
    p_safe = torch.where(m, p, g_safe)  # invalid pixels: finite and error-free (weight 0 anyway)
    p_pos = p_safe.clamp_min(PRED_FLOOR)
    diff = p_safe - g_safe
    sq = diff.square()
    q = p_pos / g_safe
    e = torch.log(q)
    ratio = torch.maximum(q, q.reciprocal())  # max(p/g, g/p)
    e_mean = _wmean(w, e)
    out = {
        "abs_rel": _wmean(w, diff.abs() / g_safe),
        "sq_rel": _wmean(w, sq / g_safe),
        "rmse": _wmean(w, sq).sqrt(),
        "rmse_log": _wmean(w, e.square()).sqrt(),
        "log10": _wmean(w, e.abs()) / math.log(10.0),
        # two-pass variance of the log error: no cancellation in float32
        "silog": 100.0 * _wmean(w, (e - torch.nan_to_num(e_mean)[:, None, None]).square()).sqrt(),
    }
    for k in (1, 2, 3):
        out[f"delta{k}"] = _wmean(w, (ratio < 1.25 ** k).to(dt))
    return out


# --------------------------------------------------------------------------------------------
# normals
# --------------------------------------------------------------------------------------------
def _weighted_lower_median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per row of ``values [B, N]``: smallest value whose cumulative weight reaches half the total.

    With equal weights this is the lower median (``torch.median``'s convention, the reference's).
    """
    v = torch.where(weights > 0, values, torch.full_like(values, float("inf")))
    order = torch.argsort(v, dim=1)
    vs = torch.gather(v, 1, order)
    cw = torch.gather(weights.clamp_min(0.0), 1, order).cumsum(dim=1)
    total = cw[:, -1:]
    # first index where the cumulative weight reaches half of the total (tiny tolerance for rounding)
    idx = (cw < 0.5 * total * (1 - 1e-9)).sum(dim=1, keepdim=True).clamp_max(values.shape[1] - 1)
    med = torch.gather(vs, 1, idx)[:, 0]
    return torch.where(total[:, 0] > 0, med, torch.full_like(med, float("nan")))


def normals_metrics(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None, *,
                    latitude_weighting: bool = False) -> dict[str, torch.Tensor]:
    """Angular-error metrics of surface normals per image (PanoNormal style); values ``[B]``.

    ``pred``, ``gt``: ``[B, 3, H, W]`` or ``[3, H, W]`` in the same frame (both are normalised
    here); ``mask``: bool ``[B, H, W]`` / ``[B, 1, H, W]`` (default: where ``gt`` is non-zero).
    Angle ``a = atan2(|p x g|, p . g)`` in degrees (accurate for small angles). Returns ``mean``,
    ``median`` (lower median), ``rmse`` = ``sqrt(mean a^2)`` (degrees) and ``within_<t>`` = percent
    of valid pixels with ``a < t`` for ``t`` in :data:`NORMALS_THRESHOLDS_DEG`.
    """
    p = _as_vectors(pred, "pred")
    g = _as_vectors(gt, "gt")
    if p.shape[-2:] != g.shape[-2:] or p.shape[0] not in (1, g.shape[0]):
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must have the same shape")
    dt = _compute_dtype(g)
    g = g.to(dt)
    p = p.to(device=g.device, dtype=dt).expand_as(g)
    px, py, pz = p[:, 0], p[:, 1], p[:, 2]
    gx, gy, gz = g[:, 0], g[:, 1], g[:, 2]  # per component: channel-strided norms are slow on CPU
    gn2 = gx * gx + gy * gy + gz * gz
    pn2 = px * px + py * py + pz * pz
    m = (gn2 > 0) & torch.isfinite(gn2)
    if mask is not None:
        m = m & _as_mask(mask, gn2)
    cx = py * gz - pz * gy
    cy = pz * gx - px * gz
    cz = px * gy - py * gx
    cross = (cx * cx + cy * cy + cz * cz).sqrt()
    dot = px * gx + py * gy + pz * gz
    ang = torch.rad2deg(torch.atan2(cross, dot))  # scale-free: norms cancel
    ang = torch.where(pn2 > 0, ang, torch.full_like(ang, 180.0))  # a zero prediction is maximally wrong
    ang = torch.where(m, ang, torch.zeros_like(ang))  # invalid pixels: finite, weight 0
    w = _pixel_weights(m, latitude_weighting, dt)
    if latitude_weighting:
        median = _weighted_lower_median(ang.flatten(1), w.flatten(1))
    else:  # lower median by selection, O(N)
        median = torch.full((ang.shape[0],), float("nan"), dtype=dt, device=ang.device)
        for b in range(ang.shape[0]):
            v = ang[b][m[b]]
            if v.numel():
                median[b] = torch.kthvalue(v, (v.numel() + 1) // 2).values
    out = {
        "mean": _wmean(w, ang),
        "median": median,
        "rmse": _wmean(w, ang.square()).sqrt(),
    }
    for t in NORMALS_THRESHOLDS_DEG:
        out[f"within_{t:g}"] = 100.0 * _wmean(w, (ang < t).to(dt))
    return out


# --------------------------------------------------------------------------------------------
# depth edges
# --------------------------------------------------------------------------------------------
def _minmax_normalise(d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``(d - min) / (max - min)`` per image with min/max over the valid pixels ``m`` (``[B, H, W]``)."""
    big = torch.finfo(d.dtype).max
    lo = torch.where(m, d, torch.full_like(d, big)).amin(dim=(-2, -1), keepdim=True)
    hi = torch.where(m, d, torch.full_like(d, -big)).amax(dim=(-2, -1), keepdim=True)
    rng = (hi - lo).clamp_min(torch.finfo(d.dtype).eps)
    return (d - lo) / rng


def sobel_edges(depth: torch.Tensor, mask: torch.Tensor | None = None, *, threshold: float = 0.01,
                dilation: int = 3) -> torch.Tensor:
    """Binary depth edges ``[B, H, W]`` (bool) as in the reference's edge evaluation.

    The depth is min-max normalised per image over the valid pixels, padded by ``dilation``
    pixels (replicate), filtered with the 3x3 Sobel pair, thresholded on the gradient magnitude
    ``sqrt(gx^2 + gy^2) > threshold`` and dilated with a ``dilation x dilation`` max filter. Invalid
    pixels still take part in the filtering (the reference's behaviour); :func:`edge_metrics`
    removes the edges that fall on them.
    """
    d = _as_maps(depth, "depth")
    d = d.to(_compute_dtype(d))
    m = _as_mask(mask, d)
    x = _minmax_normalise(torch.nan_to_num(d), m).unsqueeze(1)
    pad = max(int(dilation), 1)
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    kx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], dtype=x.dtype, device=x.device)
    k = torch.stack([kx, kx.t()]).unsqueeze(1)  # [2, 1, 3, 3]
    gxy = F.conv2d(x, k, padding=1)
    edges = (gxy.square().sum(dim=1, keepdim=True).sqrt() > threshold).to(x.dtype)
    if dilation > 1:
        edges = F.max_pool2d(edges, kernel_size=dilation, stride=1, padding=dilation // 2)
    edges = edges[:, 0, pad:-pad, pad:-pad]
    return edges[..., : d.shape[-2], : d.shape[-1]] > 0.5


def _distance_to(edges: np.ndarray) -> np.ndarray:
    """Euclidean distance (pixels) of every pixel to the nearest ``True`` pixel (inf if none)."""
    from scipy import ndimage

    if not edges.any():
        return np.full(edges.shape, np.inf)
    return ndimage.distance_transform_edt(~edges)


def edge_metrics(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None, *,
                 max_distance: float = 10.0, threshold: float = 0.01, dilation: int = 3,
                 completeness: str = "reference") -> dict[str, torch.Tensor]:
    """Depth-edge metrics per image (values ``[B]``): DBE accuracy/completeness, precision, recall.

    Edges ``E_p``, ``E_g`` come from :func:`sobel_edges` of the prediction and the ground truth
    (both normalised over ``mask``), then restricted to ``mask``. ``D_g``, ``D_p`` are the
    Euclidean distance transforms (pixels) to the nearest ground-truth / predicted edge pixel and
    ``cap = max_distance``. After Koch et al. (2018):

    * ``dbe_accuracy = mean of D_g over the predicted edges with D_g < cap``; ``cap`` if there is none.
    * ``dbe_completeness``: with ``completeness="reference"`` (the reference's formula, a capped
      chamfer distance) ``(sum_{E_p} min(D_g, cap) + sum_{E_g} min(D_p, cap)) / (|E_p| + |E_g|)``;
      with ``completeness="koch"`` ``mean over E_g of min(D_p, cap)``. ``cap`` when no predicted
      edge lies within ``cap`` of a ground-truth edge.
    * ``edge_precision = |E_p & E_g| / |E_p|`` (1 when there is no ground-truth edge, 0 when there
      is no predicted edge); ``edge_recall = |E_p & E_g| / |E_g|`` (1 without ground-truth edges).

    The reference caps the distances with the dataset's maximum depth value (e.g. 75), a value in
    metres used as pixels; the runner passes that by default to reproduce its tables.
    """
    if completeness not in ("reference", "koch"):
        raise ValueError(f"completeness: expected 'reference' or 'koch', got {completeness!r}")
    g = _as_maps(gt, "gt")
    p = _as_maps(pred, "pred").to(g.device)
    if p.shape != g.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must have the same shape")
    m = _as_mask(mask, g)
    e_p = (sobel_edges(p, m, threshold=threshold, dilation=dilation) & m).cpu().numpy()
    e_g = (sobel_edges(g, m, threshold=threshold, dilation=dilation) & m).cpu().numpy()
    cap = float(max_distance)
    rows: dict[str, list[float]] = {k: [] for k in EDGE_METRICS}
    for ep, eg in zip(e_p, e_g):  # the distance transform runs per image on the CPU
        d_g = _distance_to(eg)
        d_p = _distance_to(ep)
        near = ep & (d_g < cap)
        if not near.any():
            acc = com = cap
        else:
            acc = float(d_g[near].mean())
            if completeness == "reference":
                com = float((np.minimum(d_g[ep], cap).sum() + np.minimum(d_p[eg], cap).sum()) / (ep.sum() + eg.sum()))
            else:
                com = float(np.minimum(d_p[eg], cap).mean()) if eg.any() else 0.0
        tp = float((ep & eg).sum())
        if not eg.any():
            prec, rec = 1.0, 1.0
        else:
            prec = tp / float(ep.sum()) if ep.any() else 0.0
            rec = tp / float(eg.sum())
        for k, v in zip(EDGE_METRICS, (acc, com, prec, rec)):
            rows[k].append(v)
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in rows.items()}


# --------------------------------------------------------------------------------------------
# cube-face seams
# --------------------------------------------------------------------------------------------
#: Face indices in the library's order.
FACE_NAMES: tuple[str, ...] = ("F", "R", "B", "L", "U", "D")

_FACE_INDEX_CACHE: dict[tuple[int, int, str], torch.Tensor] = {}


def erp_face_index(height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Cube face (0..5 = F, R, B, L, U, D) seen by every ERP pixel centre, ``[H, W]`` int64.

    The face of a ray ``(x, y, z)`` (``pager.geometry`` conventions) is the axis of its largest
    absolute component with that component's sign: +x F, +z R, -x B, -z L, +y U, -y D.
    Ties (exactly on a cube edge) go to the first axis in the order x, z, y.
    """
    key = (int(height), int(width), str(device))
    if key not in _FACE_INDEX_CACHE:
        i = torch.arange(height, dtype=torch.float64)
        j = torch.arange(width, dtype=torch.float64)
        phi = (math.pi / 2 - math.pi * (i + 0.5) / height)[:, None]
        theta = (2 * math.pi * (j + 0.5) / width - math.pi)[None, :]
        x = torch.cos(phi) * torch.cos(theta)
        y = (torch.sin(phi) * torch.ones_like(theta))
        z = torch.cos(phi) * torch.sin(theta)
        comps = torch.stack([x.abs(), z.abs(), y.abs()])  # axis order x, z, y
        axis = comps.argmax(dim=0)
        face = torch.where(axis == 0, torch.where(x >= 0, 0, 2),
                           torch.where(axis == 1, torch.where(z >= 0, 1, 3), torch.where(y >= 0, 4, 5)))
        _FACE_INDEX_CACHE[key] = face.to(device=device, dtype=torch.long)
    return _FACE_INDEX_CACHE[key]


def seam_pairs(face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean maps of the neighbour pairs that cross a face border, for an ERP face map ``[H, W]``.

    Returns ``(h, v)``: ``h[i, j]`` is True when pixel ``(i, j)`` and its right neighbour
    ``(i, (j+1) mod W)`` (longitude wraps) lie on different faces, ``[H, W]``; ``v[i, j]`` when
    ``(i, j)`` and ``(i+1, j)`` do, ``[H-1, W]`` (no wrap over the poles).
    """
    h = face != torch.roll(face, shifts=-1, dims=1)
    v = face[1:] != face[:-1]
    return h, v


def _masked_quantile(x: torch.Tensor, m: torch.Tensor, q: float) -> torch.Tensor:
    """Linear-interpolated quantile ``q`` of the valid entries of each row of ``x [B, N]`` -> ``[B]``.

    Same convention as ``torch.quantile`` (position ``q (n - 1)``), by selection (``kthvalue``), not sorting.
    """
    out = torch.full((x.shape[0],), float("nan"), dtype=x.dtype, device=x.device)
    for b in range(x.shape[0]):  # per image: the number of valid entries differs
        v = x[b][m[b]]
        n = v.numel()
        if n == 0:
            continue
        pos = q * (n - 1)
        lo = int(math.floor(pos))
        a = torch.kthvalue(v, lo + 1).values
        if pos > lo and lo + 1 < n:
            b_ = torch.kthvalue(v, lo + 2).values
            a = a + (pos - lo) * (b_ - a)
        out[b] = a
    return out


def _robust_normalise(d: torch.Tensor, m: torch.Tensor, percentile: float) -> torch.Tensor:
    """Per-image min-max to [0, 1] over valid pixels; ``percentile > 0`` clips to that quantile range."""
    flat, mf = d.flatten(1), m.flatten(1)
    lo = _masked_quantile(flat, mf, percentile)
    hi = _masked_quantile(flat, mf, 1.0 - percentile)
    scale = (hi - lo).clamp_min(1e-8)
    return ((d - lo[:, None, None]) / scale[:, None, None]).clamp(0.0, 1.0)


def _shift(x: torch.Tensor, k: int, dim: int, wrap: bool, fill) -> torch.Tensor:
    """``y[..., i, ...] = x[..., i + k, ...]`` along ``dim`` (cyclic or padded with ``fill``)."""
    if wrap:
        return torch.roll(x, shifts=-k, dims=dim)
    n = x.shape[dim]
    out = torch.full_like(x, fill)
    if abs(k) >= n:
        return out
    if k >= 0:
        out.narrow(dim, 0, n - k).copy_(x.narrow(dim, k, n - k))
    else:
        out.narrow(dim, -k, n + k).copy_(x.narrow(dim, 0, n + k))
    return out


def _directional_excess(d: torch.Tensor, m: torch.Tensor, face: torch.Tensor, dim: int, wrap: bool,
                        tolerance: int, compensate: bool) -> tuple[torch.Tensor, ...]:
    """Jumps along one direction. ``d``, ``m``: ``[B, H, W]``; ``face``: ``[H, W]``; ``dim`` -1 or -2.

    Pair ``k`` joins pixel ``k`` and ``k+1`` along ``dim``. Returns per pair (``[B, P...]``): raw
    jump, excess jump, pair validity, seam flag and (when a seam) the cube-edge id, plus the
    interior-pair flag.
    """
    nb = lambda x, k, fill: _shift(x, k, dim, wrap, fill)  # noqa: E731
    jump = (d - nb(d, 1, 0.0)).abs()
    valid = m & nb(m, 1, False)
    face_b = nb(face, 1, -1)
    seam = (face != face_b) & (face_b >= 0)
    interior = (face == face_b)
    if not wrap:  # the last pair along a non-wrapping axis does not exist
        n = d.shape[dim]
        keep = torch.arange(n, device=d.device) < n - 1
        shape = [1] * d.ndim
        shape[dim] = n
        keep = keep.view(shape)
        valid = valid & keep
    jv = torch.where(valid, jump, torch.zeros_like(jump))
    if compensate:
        # seam statistic: largest jump among the pairs within `tolerance` of the seam pair
        stat = jv
        for k in range(1, tolerance + 1):
            stat = torch.maximum(stat, torch.maximum(nb(jv, k, 0.0), nb(jv, -k, 0.0)))
        # in-face reference: largest jump among the interior pairs just outside that window
        ref_ok = (valid & interior.expand_as(valid))
        ref = torch.zeros_like(jv)
        for k in (tolerance + 1, -(tolerance + 1)):
            ok = nb(ref_ok, k, False)
            ref = torch.maximum(ref, torch.where(ok, nb(jv, k, 0.0), torch.zeros_like(jv)))
        excess = (stat - ref).clamp_min(0.0)
    else:
        excess = jv
    lo = torch.minimum(face, face_b)
    hi = torch.maximum(face, face_b)
    edge_id = torch.where(seam, lo * 6 + hi, torch.zeros_like(lo))
    return jv, excess, valid, seam.expand_as(valid), edge_id.expand_as(valid), interior.expand_as(valid)


def seam_metrics(depth: torch.Tensor, mask: torch.Tensor | None = None, *,
                 pixel_jump_thresh: float = 0.010, edge_mean_jump_thresh: float = 0.008,
                 min_broken_pixel_frac: float = 0.05, normalize_percentile: float = 0.01,
                 compensate_interior: bool = True, tolerance: int = 1) -> dict[str, torch.Tensor]:
    """Cube-seam discontinuity metrics of ERP depth predictions, per image (values ``[B]``).

    ``depth``: ``[B, 1, H, W]``, ``[B, H, W]`` or ``[H, W]`` (any unit); ``mask``: optional bool.
    Steps:

    1. Normalise each image to [0, 1]: clip to its ``normalize_percentile`` and
       ``1 - normalize_percentile`` quantiles over valid pixels, then min-max (as the reference).
    2. Seam pairs: horizontally (wrapping in longitude) or vertically neighbouring ERP pixels
       whose cube faces (:func:`erp_face_index`, exact cube geometry) differ, both pixels valid.
       Each belongs to one of the 12 cube edges (the unordered pair of faces).
    3. Jump of a pair: ``|d(a) - d(b)|``. With ``compensate_interior`` (default) the seam statistic
       of a seam pair is the largest jump among the pairs within ``tolerance`` steps of it along
       the same line (tolerating resamplers that assign border pixels to the neighbouring face),
       and the **excess jump** is that statistic minus the largest jump of the in-face pairs just
       outside that window (``tolerance + 1`` steps before and after; 0 where none is in-face), at
       least 0. A smooth depth (whose in-face gradient continues across the border) has excess
       ~0, a step of height ``s`` at the border has excess ~``s``. Without ``compensate_interior``
       the excess is the raw jump of the seam pair (the reference's statistic).

    Metrics (thresholds default to the reference's command-line defaults):

    * ``seam_defect_density``: fraction of seam pairs whose excess jump ``> pixel_jump_thresh``.
    * ``seam_prevalence``: fraction of the cube edges (with at least one valid seam pair) whose
      fraction of such broken pairs is ``> min_broken_pixel_frac``.
    * ``seam_severity``: fraction of the cube edges whose mean excess jump ``> edge_mean_jump_thresh``.
    * ``seam_mean_excess``: mean excess jump over all seam pairs (normalised depth units).
    * ``seam_gradient_ratio``: mean raw jump over seam pairs / mean raw jump over in-face pairs
      (about 1 for a seamless prediction, larger with seams; ``nan`` on a constant image).
    """
    d = _as_maps(depth, "depth")
    dt = _compute_dtype(d)
    d = d.to(dt)
    m = _as_mask(mask, d) & torch.isfinite(d)
    B, H, W = d.shape
    d = _robust_normalise(torch.where(m, d, torch.zeros_like(d)), m, normalize_percentile)
    face = erp_face_index(H, W, d.device)
    results = [
        _directional_excess(d, m, face, dim=-1, wrap=True, tolerance=tolerance, compensate=compensate_interior),
        _directional_excess(d, m, face, dim=-2, wrap=False, tolerance=tolerance, compensate=compensate_interior),
    ]
    jv = torch.cat([r[0].flatten(1) for r in results], dim=1)
    ex = torch.cat([r[1].flatten(1) for r in results], dim=1)
    valid = torch.cat([r[2].flatten(1) for r in results], dim=1)
    seam = torch.cat([r[3].flatten(1) for r in results], dim=1) & valid
    eid = torch.cat([r[4].flatten(1) for r in results], dim=1)
    interior = torch.cat([r[5].flatten(1) for r in results], dim=1) & valid

    sf = seam.to(dt)
    n_seam = sf.sum(dim=1)
    broken = (ex > pixel_jump_thresh).to(dt) * sf
    nan = torch.full((B,), float("nan"), dtype=dt, device=d.device)
    density = torch.where(n_seam > 0, broken.sum(dim=1) / n_seam.clamp_min(1), nan)
    mean_excess = torch.where(n_seam > 0, (ex * sf).sum(dim=1) / n_seam.clamp_min(1), nan)

    # per cube edge: 36 bins (lo * 6 + hi), only 12 are ever populated
    bins = torch.zeros(B, 36, dtype=dt, device=d.device)
    count = bins.scatter_add(1, eid, sf)
    ex_sum = bins.scatter_add(1, eid, ex * sf)
    br_sum = bins.scatter_add(1, eid, broken)
    present = count > 0
    n_edges = present.to(dt).sum(dim=1)
    c = count.clamp_min(1)
    prevalence = ((br_sum / c > min_broken_pixel_frac) & present).to(dt).sum(dim=1) / n_edges.clamp_min(1)
    severity = ((ex_sum / c > edge_mean_jump_thresh) & present).to(dt).sum(dim=1) / n_edges.clamp_min(1)
    prevalence = torch.where(n_edges > 0, prevalence, nan)
    severity = torch.where(n_edges > 0, severity, nan)

    inf_ = interior.to(dt)
    seam_mean = (jv * sf).sum(dim=1) / n_seam.clamp_min(1)
    int_mean = (jv * inf_).sum(dim=1) / inf_.sum(dim=1).clamp_min(1)
    ratio = torch.where((n_seam > 0) & (int_mean > 0), seam_mean / int_mean.clamp_min(1e-30), nan)
    return {
        "seam_defect_density": density,
        "seam_prevalence": prevalence,
        "seam_severity": severity,
        "seam_mean_excess": mean_excess,
        "seam_gradient_ratio": ratio,
    }


# --------------------------------------------------------------------------------------------
# invalid regions
# --------------------------------------------------------------------------------------------
def invalid_mask_metrics(pred_valid: torch.Tensor, gt_valid: torch.Tensor, *,
                         latitude_weighting: bool = False) -> dict[str, torch.Tensor]:
    """How well a prediction marks the invalid pixels (sky, beyond range) of the ground truth, per image.

    ``pred_valid``: bool ``[B, H, W]`` / ``[B, 1, H, W]`` / ``[H, W]``, the prediction's valid pixels (e.g. the
    ``depth_mask`` of :meth:`pager.model.Pager.predict`: not saturated); ``gt_valid``: the ground truth's.
    With ``P = ~pred_valid`` and ``G = ~gt_valid`` (pixel areas, ``cos(latitude)``-weighted with
    ``latitude_weighting``):

    * ``invalid_iou`` = ``|P & G| / |P | G|`` (``nan`` when both are empty: nothing to find);
    * ``invalid_precision`` = ``|P & G| / |P|`` (``nan`` when the prediction marks nothing invalid);
    * ``invalid_recall`` = ``|P & G| / |G|`` (``nan`` when the ground truth has no invalid pixel).

    The ``nan`` entries are skipped by :func:`average_over_images`, so an indoor image with no invalid
    pixel and none predicted does not count, and one with false alarms counts as IoU 0.
    """
    pv = _as_maps(pred_valid, "pred_valid")
    pv = pv if pv.dtype == torch.bool else pv != 0
    gv = _as_mask(gt_valid, pv, "gt_valid")
    if pv.shape[0] != gv.shape[0]:
        raise ValueError(f"pred_valid {tuple(pred_valid.shape)} and gt_valid {tuple(gt_valid.shape)} differ in batch size")
    p, g = ~pv, ~gv
    w = torch.ones(pv.shape, dtype=torch.float64, device=pv.device)
    if latitude_weighting:
        w = w * latitude_weights(pv.shape[-2], pv.shape[-1], pv.device, torch.float64)

    def area(m: torch.Tensor) -> torch.Tensor:
        return (w * m).sum(dim=(-2, -1))

    inter, union, ap, ag = area(p & g), area(p | g), area(p), area(g)
    nan = torch.full_like(inter, float("nan"))

    def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return torch.where(den > 0, num / den.clamp_min(1e-300), nan)

    return {"invalid_iou": ratio(inter, union), "invalid_precision": ratio(inter, ap), "invalid_recall": ratio(inter, ag)}


# --------------------------------------------------------------------------------------------
# aggregation
# --------------------------------------------------------------------------------------------
def average_over_images(per_image: Mapping[str, torch.Tensor | Iterable[float]]) -> dict[str, float]:
    """Mean over images of every metric, ignoring ``nan`` entries (images without valid pixels).

    ``per_image``: metric name -> ``[N]`` values (tensor or list); returns name -> float
    (``nan`` when no image has a finite value).
    """
    out: dict[str, float] = {}
    for k, v in per_image.items():
        t = torch.as_tensor(v if isinstance(v, torch.Tensor) else list(v), dtype=torch.float64).flatten()
        t = t[torch.isfinite(t)]
        out[k] = float(t.mean()) if t.numel() else float("nan")
    return out
