"""``python -m backends.s3``: run a SeaweedFS S3 server until Ctrl-C and print how to reach it."""

from .._server import serve_forever
from . import SeaweedFS

if __name__ == "__main__":
    server = SeaweedFS()
    serve_forever(
        server,
        lambda: "\n".join(
            [f"SeaweedFS S3 at {server.endpoint}, bucket {server.bucket!r}; data in {server.workdir}"]
            + [f"export {k}={v}" for k, v in server.env().items()]
        ),
    )
