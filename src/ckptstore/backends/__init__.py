"""Storage backends and what each can do.

Code above this layer asks a backend what it can do (:class:`Capabilities`), never what type it is.
This release ships the local backend (local disk and NFS mounts); object stores (S3, GCS) and any
other fsspec protocol come next, behind the same boundary.
"""

from .base import Capabilities
from .local import LocalBackend

__all__ = ["Capabilities", "LocalBackend"]
