"""``python -m backends.gcs``: run gcp-storage-emulator until Ctrl-C and print how to reach it."""

from .._server import serve_forever
from . import GcsEmulator

if __name__ == "__main__":
    server = GcsEmulator()
    serve_forever(
        server,
        lambda: "\n".join(
            [f"gcp-storage-emulator at {server.endpoint}, bucket {server.bucket!r}"]
            + [f"export {k}={v}" for k, v in server.env().items()]
            + ["storage_options = " + repr(server.storage_options)]
        ),
    )
