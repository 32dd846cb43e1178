"""Seam measurements on ERP images stitched from cubemaps, shared by the padding and model seam tests."""
import torch

from pager.geometry import cubemap_to_erp


def face_labels(fs, h):
    """Face index (0..5, F R B L U D) of every pixel of an ERP of height ``h`` stitched from ``fs``-px faces."""
    cube = torch.arange(6.0).view(1, 6, 1, 1, 1).expand(1, 6, 1, fs, fs).contiguous()
    return cubemap_to_erp(cube, h, 2 * h, mode="nearest")[0, 0]


def local_border_jump_ratio(erp, labels):
    """Median over ERP neighbour pairs that straddle a face border of |jump| divided by the mean |jump| of
    the two pairs just before and after it on the same row/column (both inside faces). A smooth image
    gives ~1 whatever the local gradient; a step along face borders gives > 1."""
    ratios = []
    for e, lab in ((erp, labels), (erp.T, labels.T)):
        d = (e[:, 1:] - e[:, :-1]).abs()
        border = lab[:, 1:] != lab[:, :-1]
        r, c = torch.nonzero(border[:, 1:-1], as_tuple=True)
        c = c + 1
        keep = ~border[r, c - 1] & ~border[r, c + 1]
        r, c = r[keep], c[keep]
        ratios.append(d[r, c] / (0.5 * (d[r, c - 1] + d[r, c + 1]) + 1e-12))
    ratios = torch.cat(ratios)
    assert ratios.numel() > 100
    return ratios.median().item()
