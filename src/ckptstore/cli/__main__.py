"""``python -m ckptstore.cli``: the same command as ``ckptstore`` and ``python -m ckptstore``."""

import sys

from . import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
