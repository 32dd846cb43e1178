"""Export of predictions: colormaps and mosaics, 16-bit depth PNG / npz / image files, ERP point clouds (GLB/PLY)."""
from pager.export.files import check_depth_png_scale, depth_png_scale, load_depth_png16, load_npz, save_depth_png16, save_image, save_npz
from pager.export.pointcloud import (
    PointCloud,
    erp_point_cloud,
    erp_rays,
    flying_pixel_mask,
    save_point_cloud,
    sphere_uniform_indices,
)
from pager.export.visualize import colorize_depth, depth_colorbar, depth_range, error_map, mosaic, normals_to_rgb

__all__ = [
    "PointCloud",
    "colorize_depth",
    "depth_colorbar",
    "check_depth_png_scale",
    "depth_png_scale",
    "depth_range",
    "erp_point_cloud",
    "erp_rays",
    "error_map",
    "flying_pixel_mask",
    "load_depth_png16",
    "load_npz",
    "mosaic",
    "normals_to_rgb",
    "save_depth_png16",
    "save_image",
    "save_npz",
    "save_point_cloud",
    "sphere_uniform_indices",
]
