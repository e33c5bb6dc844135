"""``python -m backends.lazyfs MOUNTPOINT --control SOCKET``: run the LazyFS daemon in the foreground."""

from .fs import main

main()
