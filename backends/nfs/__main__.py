"""``python -m backends.nfs MOUNTPOINT --control SOCKET --export DIR``: run one NFS-like client."""

from .fs import main

main()
