"""One reader per dataset: listing samples and decoding files only (shared logic in ``pager.data.dataset``)."""
from pager.data.readers.images import Images
from pager.data.readers.matterport3d360 import Matterport3D360
from pager.data.readers.panoinfinigen import PanoInfinigen
from pager.data.readers.replica360_4k import Replica360_4K
from pager.data.readers.scannetpp import ScannetPP
from pager.data.readers.stanford2d3ds import Stanford2D3DS
from pager.data.readers.structured3d import Structured3D
from pager.data.readers.synthetic import Synthetic

__all__ = ["Images", "Matterport3D360", "PanoInfinigen", "Replica360_4K", "ScannetPP", "Stanford2D3DS", "Structured3D", "Synthetic"]
