"""Platform-independent elementary functions for the procedural renderer.

NumPy's ``sin``/``cos``/``exp``/``log`` may use different SIMD kernels (or libm versions) on
different CPUs and may differ in the last bit there. Everything the synthetic renderer writes is
meant to be bit-identical on every machine, so it only uses IEEE-754 operations that are correctly
rounded everywhere (``+ - * /``, ``sqrt``, ``floor``, ``rint``, min/max, comparisons) and computes
sines and cosines with a fixed polynomial (fdlibm's kernel coefficients, Cody-Waite reduction)
evaluated with those operations only. Accuracy is about 1e-16 absolute on ``[-2pi, 2pi]``.
"""

from __future__ import annotations

import numpy as np

# pi/2 split in a 33-bit head (so k * head is exact for small k) and a tail (fdlibm's pio2_1/pio2_1t).
_PIO2_HI = 1.57079632673412561417e00
_PIO2_LO = 6.07710050650619224932e-11
_TWO_OVER_PI = 6.36619772367581382433e-01

_S = (
    -1.66666666666666324348e-01,
    8.33333333332248946124e-03,
    -1.98412698298579493134e-04,
    2.75573137070700676789e-06,
    -2.50507602534068634195e-08,
    1.58969099521155010221e-10,
)
_C = (
    4.16666666666666019037e-02,
    -1.38888888888741095749e-03,
    2.48015872894767294178e-05,
    -2.75573143513906633035e-07,
    2.08757232129817482790e-09,
    -1.13596475577881948265e-11,
)


def det_sincos(x: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Sine and cosine of ``x`` (radians, float64, ``|x| <= ~1e3``), bit-identical on every platform.

    Returns ``(sin(x), cos(x))`` as float64 arrays of the shape of ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    k = np.rint(x * _TWO_OVER_PI)
    r = (x - k * _PIO2_HI) - k * _PIO2_LO
    z = r * r
    ps = _S[5]
    for c in _S[4::-1]:
        ps = ps * z + c
    sin_r = r + (r * z) * ps
    pc = _C[5]
    for c in _C[4::-1]:
        pc = pc * z + c
    cos_r = (1.0 - 0.5 * z) + (z * z) * pc
    q = np.mod(k, 4.0)  # exact for integral floats
    sin_x = np.where(q == 0, sin_r, np.where(q == 1, cos_r, np.where(q == 2, -sin_r, -cos_r)))
    cos_x = np.where(q == 0, cos_r, np.where(q == 1, -sin_r, np.where(q == 2, -cos_r, sin_r)))
    return sin_x, cos_x


def erp_angles(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Longitude ``theta`` [W] and latitude ``phi`` [H] (radians) of ERP pixel centres (pager.geometry)."""
    u = (np.arange(width, dtype=np.float64) + 0.5) / width
    v = (np.arange(height, dtype=np.float64) + 0.5) / height
    theta = (2.0 * np.pi) * u - np.pi
    phi = 0.5 * np.pi - np.pi * v
    return theta, phi


def erp_rays(height: int, width: int, row0: int = 0, row1: int | None = None) -> np.ndarray:
    """Unit rays ``[3, H, W]`` float64 of ERP pixel centres in the world frame (x fwd, y up, z right).

    With ``row0``/``row1`` only rows ``row0:row1`` of the ``height x width`` grid are returned.

    ``ray = (cos(phi) cos(theta), sin(phi), cos(phi) sin(theta))`` exactly as in ``pager.geometry``,
    computed with :func:`det_sincos` so the result is bit-identical on every machine.
    """
    theta, phi = erp_angles(height, width)
    phi = phi[row0 : height if row1 is None else row1]
    st, ct = det_sincos(theta)
    sp, cp = det_sincos(phi)
    rays = np.empty((3, phi.shape[0], width), dtype=np.float64)
    np.multiply(cp[:, None], ct[None, :], out=rays[0])
    rays[1] = sp[:, None]
    np.multiply(cp[:, None], st[None, :], out=rays[2])
    return rays
