"""Superseded by ``bench/save_formats.py`` (the same comparison with every serializer and its peers).

Kept so that old commands keep working: ``python bench/save_throughput.py --size-mib 1024`` runs
``save_formats.py`` with the same options.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.argv[0] = str(Path(__file__).with_name("save_formats.py"))
    sys.path.insert(0, str(Path(__file__).parent))
    runpy.run_path(sys.argv[0], run_name="__main__")
