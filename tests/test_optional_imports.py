"""Importing ckptstore imports no framework, no cloud SDK and no CLI library."""

from __future__ import annotations

import subprocess
import sys

HEAVY = [
    "torch",
    "keras",
    "jax",
    "flax",
    "transformers",
    "pytorch_lightning",
    "lightning",
    "tensorflow",
    "s3fs",
    "gcsfs",
    "botocore",
    "click",
    "rich",
    "matplotlib",
    "numpy",
    "safetensors",
]


def test_import_ckptstore_imports_nothing_heavy() -> None:
    code = (
        "import sys, ckptstore, ckptstore.keep, ckptstore.testing\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "", f"imported at import time: {proc.stdout.strip()}"


def test_a_local_store_works_without_touching_cloud_packages(tmp_path: object) -> None:
    code = (
        "import sys, ckptstore\n"
        f"s = ckptstore.open({str(tmp_path)!r})\n"
        "s.save_state(1, {'a': 1}, serializer='json')\n"
        "assert s.latest().load() == {'a': 1}\n"
        "print(','.join(m for m in ('s3fs', 'gcsfs', 'botocore', 'torch') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == ""
