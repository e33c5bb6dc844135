"""Extra memory and time of saving a big checkpoint to S3 (SeaweedFS started by this script).

Each variant runs in a fresh child process that measures its own peak RSS (``ru_maxrss``) above its
RSS just before the save, so what the checkpoint's bytes cost in memory is visible, not the
interpreter's. Variants:

* ``put_file``: plain ``s3fs.put_file`` of a local file (the baseline for time; s3fs's own memory);
* ``stream``: ``tx.open()`` fed 8 MiB at a time: bytes go straight to a multipart upload, hashed on the way;
* ``staged``: a file written into ``tx.path`` and uploaded (in parallel with others) at commit.

Goal: each store variant needs at most ~128 MiB extra for a 1 GiB checkpoint, and its time is close to
``put_file``'s (printed as a ratio measured in the same run).

    python bench/object_store_memory.py [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backends.s3 import SeaweedFS

CHILD = textwrap.dedent(
    """
    import json, os, resource, sys, tempfile, time
    variant, url, opts, size = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
    import ckptstore, s3fs
    chunk = os.urandom(8 * 1024 * 1024)
    scratch = tempfile.mkdtemp()
    local = os.path.join(scratch, "big.bin")
    if variant in ("put_file", "staged"):
        with open(local, "wb") as f:
            for _ in range(size // len(chunk)):
                f.write(chunk)
    store = ckptstore.open(url, storage_options=opts, progress=False)
    fs = s3fs.S3FileSystem(**opts)
    def rss_mib():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    before = rss_mib()
    resource_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    if variant == "put_file":
        fs.put_file(local, url.replace("s3://", "") + "/plain/big.bin")
    elif variant == "stream":
        with store.save(1) as tx:
            with tx.open("big.bin") as f:
                for _ in range(size // len(chunk)):
                    f.write(chunk)
    else:
        with store.save(1) as tx:
            os.replace(local, tx.path / "big.bin")
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if variant != "put_file":
        assert store.get(1).size == size
    print(json.dumps({"seconds": seconds, "rss_before": before, "peak": peak,
                      "extra": peak - max(before, resource_before)}))
    """
)


def run(variant: str, server: SeaweedFS, size: int) -> dict[str, float]:
    url = server.url(f"bench-{uuid.uuid4().hex}")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, variant, url, json.dumps(server.storage_options), str(size)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{proc.stderr}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024
    with SeaweedFS() as server:
        results = {v: run(v, server, size) for v in ("put_file", "stream", "staged")}
    base = results["put_file"]["seconds"]
    print(f"{args.size_mib} MiB to SeaweedFS S3 on 127.0.0.1")
    print(f"{'variant':<10} {'seconds':>8} {'ratio':>6} {'extra MiB':>10} {'peak RSS MiB':>13}")
    for name, r in results.items():
        print(f"{name:<10} {r['seconds']:8.2f} {r['seconds'] / base:6.2f} {r['extra']:10.0f} {r['peak']:13.0f}")
    worst = max(results["stream"]["extra"], results["staged"]["extra"])
    print(f"store variants: at most {worst:.0f} MiB extra memory (goal <= 128 MiB)")


if __name__ == "__main__":
    main()
