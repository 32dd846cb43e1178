"""Spherical geometry of PaGeR: pure, batched, differentiable tensor math (no model, no file I/O).

Conventions (used by every module of the package; do not redefine them elsewhere)
---------------------------------------------------------------------------------
ERP image
    A panorama is an equirectangular (ERP) tensor ``[B, C, H, W]`` with ``W == 2 * H``.
    Pixel ``(i, j)`` (row, column) has its centre at ``u = (j + 0.5) / W``, ``v = (i + 0.5) / H``.
    Longitude ``theta = 2*pi*u - pi`` lies in ``(-pi, pi)``: 0 at the image centre, increasing to the
    right (turning right when seen from the camera). Latitude ``phi = pi/2 - pi*v`` lies in
    ``(-pi/2, pi/2)``: positive at the top of the image.

World frame (right-handed, camera-centred, metres)
    ``x`` = forward (theta = 0, phi = 0: the centre of the ERP), ``y`` = up, ``z`` = right
    (theta = +pi/2, three quarters across the image). ``forward x up = right``, so the frame is
    right-handed and y-up like glTF. The unit ray of a pixel is::

        ray(theta, phi) = (cos(phi) cos(theta), sin(phi), cos(phi) sin(theta))

    Depth is the *range* (Euclidean distance from the camera centre along the ray) in metres;
    the 3-D point of a pixel is ``depth * ray``. Point clouds are written in this frame.

Surface normals
    Unit vectors in the same world frame (not a per-pixel camera frame), oriented towards the
    camera side of the surface (``dot(normal, ray) <= 0``). The reference project's normals live in
    a mirrored frame (x forward, y up, z *left*); converting them to ours negates ``z``.

Cubemap
    A cubemap is ``[B, 6, C, F, F]`` at the edges of the library and ``[B*6, C, F, F]`` inside
    networks, faces in the order F, R, B, L, U, D (front +x, right +z, back -x, left -z, up +y,
    down -y) with exactly the pixel orientation of pytorch360convert's ``stack`` format (the
    released checkpoints were trained on its cubemaps). pytorch360convert works in a left-handed
    frame ``(x_p right, y_p up, z_p forward)``; ours is ``(x, y, z) = (z_p, y_p, x_p)``.
    Face pixel ``(r, c)`` of a face of size ``F`` sits at the face coordinates
    ``a_c = -1/2 + c/(F-1)`` (left to right) and ``b_r = 1/2 - r/(F-1)`` (top to bottom) on a cube of
    side 1, i.e. the grid runs edge to edge (pytorch360convert's ``linspace(-0.5, 0.5, F)``):
    F: (1/2, b_r, a_c)     R: (-a_c, b_r, 1/2)    B: (-1/2, b_r, -a_c)
    L: (a_c, b_r, -1/2)    U: (-b_r, 1/2, a_c)    D: (b_r, -1/2, a_c)
    (written as world ``(x, y, z)``; the ray is the normalised point).
"""

from pager.geometry.sphere import angles_to_directions, directions_to_angles, erp_angles, erp_directions
from pager.geometry.cubemap import (
    FACE_NAMES,
    STITCHING_MODES,
    cubemap_angles,
    cubemap_directions,
    cubemap_to_erp,
    erp_to_cubemap,
    uv_positional_encoding,
)
from pager.geometry.cube_padding import (
    CUBE_PADDING_MODES,
    CubePadConv2d,
    convert_to_cube_padding,
    cube_pad,
    cube_pad_asymmetric,
    cube_pad_sources,
    cube_padding_enabled,
    cube_padding_mode,
)
from pager.geometry.normals import depth_to_normals, depth_to_points, normals_angle_error
from pager.geometry.augment import roll_erp, roll_normals, rotate_normals_yaw
from pager.geometry.warp import erp_reproject, erp_sample, relative_pose, reproject_visibility, yaw_pose
from pager.geometry.alignment import (
    ALIGNMENT_METHODS,
    align_depth,
    align_log_shift,
    align_median,
    align_scale,
    align_scale_shift,
)

__all__ = [
    "erp_angles",
    "erp_directions",
    "directions_to_angles",
    "angles_to_directions",
    "FACE_NAMES",
    "STITCHING_MODES",
    "erp_to_cubemap",
    "cubemap_to_erp",
    "cubemap_directions",
    "cubemap_angles",
    "uv_positional_encoding",
    "cube_pad",
    "cube_pad_asymmetric",
    "cube_pad_sources",
    "CubePadConv2d",
    "convert_to_cube_padding",
    "cube_padding_enabled",
    "cube_padding_mode",
    "CUBE_PADDING_MODES",
    "depth_to_points",
    "depth_to_normals",
    "normals_angle_error",
    "roll_erp",
    "roll_normals",
    "rotate_normals_yaw",
    "yaw_pose",
    "relative_pose",
    "erp_reproject",
    "erp_sample",
    "reproject_visibility",
    "ALIGNMENT_METHODS",
    "align_scale",
    "align_scale_shift",
    "align_median",
    "align_log_shift",
    "align_depth",
]
