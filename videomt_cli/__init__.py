"""videomt: video segmentation and tracking with VidEoMT.

The library is torch-lazy at the top level: ``import videomt_cli`` is cheap, and the
network lives in :mod:`videomt_cli.model`.
"""

from videomt_cli.errors import VideoMTError

__version__ = "0.1.0"
__all__ = ["VideoMTError", "__version__"]
