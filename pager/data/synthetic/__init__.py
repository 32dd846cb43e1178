"""Procedural 360° scenes with exact geometry: our own small, fast PanoInfinigen.

``render_scene(seed, height, kind, supersample)`` builds a seeded indoor or outdoor scene from
boxes, cylinders, spheres, a room with a doorway and an alcove or a ground plane with sky, and ray
casts it analytically for all ERP pixels at once: RGB (procedural textures, Lambert shading), range
depth in metres, world-frame unit normals and a valid mask, in the conventions of ``pager.geometry``.
``write_dataset`` stores a set on disk as plain files or in the PanoInfinigen LMDB layout.
"""

from pager.data.synthetic.raycast import SyntheticPanorama, render, render_scene
from pager.data.synthetic.writer import DEPTH_PNG_SCALE, GENERATOR_VERSION, write_dataset
from pager.data.synthetic.scene import (
    INDOOR_MAX_DEPTH,
    OUTDOOR_MAX_DEPTH,
    Scene,
    indoor_scene,
    make_scene,
    outdoor_scene,
)

__all__ = [
    "DEPTH_PNG_SCALE",
    "GENERATOR_VERSION",
    "INDOOR_MAX_DEPTH",
    "OUTDOOR_MAX_DEPTH",
    "Scene",
    "SyntheticPanorama",
    "indoor_scene",
    "make_scene",
    "outdoor_scene",
    "render",
    "render_scene",
    "write_dataset",
]
