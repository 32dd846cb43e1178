"""Independent geometric truth shared by the geometry tests, written out from the conventions in the
``pager.geometry`` docstring (not imported from the code under test)."""
import torch

# Per face (normal, right, up): the cube point of face coordinates (a, b) is n/2 + a*right + b*up, with
# a = -1/2 + c/(F-1) (left to right) and b = 1/2 - r/(F-1) (top to bottom) on pytorch360convert's grid.
FRAMES = {
    "F": ((1, 0, 0), (0, 0, 1), (0, 1, 0)),
    "R": ((0, 0, 1), (-1, 0, 0), (0, 1, 0)),
    "B": ((-1, 0, 0), (0, 0, -1), (0, 1, 0)),
    "L": ((0, 0, -1), (1, 0, 0), (0, 1, 0)),
    "U": ((0, 1, 0), (0, 0, 1), (-1, 0, 0)),
    "D": ((0, -1, 0), (0, 0, 1), (1, 0, 0)),
}
VEC = {k: [torch.tensor(v, dtype=torch.float64) for v in vs] for k, vs in FRAMES.items()}


def field(p):
    """Smooth, non-symmetric function of direction (p: [..., 3], any length) -> [..., 2]."""
    d = p / p.norm(dim=-1, keepdim=True)
    x, y, z = d.unbind(-1)
    return torch.stack((x + 2 * y + 3 * z + x * z, torch.sin(3 * x) * torch.cos(2 * y) + z), dim=-1)
