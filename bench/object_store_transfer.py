"""Upload and download speed of a checkpoint on S3 (SeaweedFS started by this script), against s3fs and boto3.

Every variant runs in a fresh child process, one at a time, in interleaved rounds (the order rotates
each round), and reports its time and its peak RSS growth (``VmHWM``, reset through
``/proc/self/clear_refs`` just before the timed part, less the RSS then). Each round's times are
divided by that round's baseline, so a ratio compares two runs that saw the same machine; the table
shows the median with min and max over the rounds.

Uploads (baseline ``s3fs.put_file``):

* ``put_file``: ``s3fs.S3FileSystem.put_file`` of the local file (s3fs's own concurrency, 50 MiB parts);
* ``boto3``: boto3's threaded ``upload_file`` (s3transfer, 8 MiB parts, 10 threads), if boto3 is installed;
* ``staged``: a whole save with the file in ``tx.path`` (claim, upload hashed in its one read,
  manifest, pointers); the file is a copy made and fsynced before the timing, so, like the other
  variants' source, it is clean in the page cache when the upload starts;
* ``stream``: a whole save with the file's bytes written through ``tx.open()`` 8 MiB at a time.

Downloads (baseline ``s3fs.get``): ``get`` (``s3fs.get_file``), ``boto3_get`` (``download_file``) and
``download`` (``Checkpoint.download``, verified: every byte hashed and checked against the manifest).

    python bench/object_store_transfer.py [--size-mib 64] [--repeats 3] [--part-mib 8] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import OUT
from backends.s3 import SeaweedFS

MiB = 1024 * 1024

CHILD = textwrap.dedent(
    """
    import json, os, shutil, sys, time, uuid
    variant, url, opts, local, work, extra = sys.argv[1:7]
    opts, extra = json.loads(opts), json.loads(extra)
    import ckptstore, s3fs
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **opts)
    size = os.path.getsize(local)
    bucket_path = url.replace("s3://", "")
    store_opts = {**opts, **{k: v for k, v in extra.items() if k != "remote"}}
    def status_mib(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    boto = None
    if variant in ("boto3", "boto3_get"):
        import boto3
        boto = boto3.client("s3", endpoint_url=opts["client_kwargs"]["endpoint_url"], aws_access_key_id=opts["key"],
                            aws_secret_access_key=opts["secret"], region_name="us-east-1")
    store = None
    if variant in ("staged", "stream", "download"):
        store = ckptstore.open(url, storage_options=store_opts, progress=False)
    staged_copy = None
    if variant == "staged":  # the file to stage, copied outside the timed part (the copy is in the page cache)
        staged_copy = os.path.join(work, "staged.bin")
        shutil.copyfile(local, staged_copy)
        fd = os.open(staged_copy, os.O_RDONLY)
        os.fsync(fd)  # written back before the timing, as the other variants' source file is: at 4 GiB the
        os.close(fd)  # write-back of the fresh copy ran during the upload and slowed it and the server
    dest = os.path.join(work, "out-" + uuid.uuid4().hex[:8])
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the RSS now
        f.write("5")
    before = status_mib("VmRSS")
    cpu0 = os.times().user + os.times().system
    t = time.perf_counter()
    if variant == "put_file":
        fs.put_file(local, bucket_path + "/plain/put_file.bin")
    elif variant == "boto3":
        bucket, _, key = bucket_path.partition("/")
        boto.upload_file(local, bucket, key + "/plain/boto3.bin")
    elif variant == "stream":
        with store.save(1) as tx, tx.open("big.bin") as out, open(local, "rb", buffering=0) as src:
            while True:
                chunk = src.read(8 * 1024 * 1024)
                if not chunk:
                    break
                out.write(chunk)
    elif variant == "staged":
        with store.save(1) as tx:
            os.replace(staged_copy, tx.path / "big.bin")
    elif variant == "get":
        fs.get_file(extra["remote"], dest)
    elif variant == "boto3_get":
        bucket, _, key = extra["remote"].partition("/")
        boto.download_file(bucket, key, dest)
    elif variant == "download":
        store.get(1).download(dest)
    seconds = time.perf_counter() - t
    times = os.times()
    cpu = times.user + times.system - cpu0
    peak = status_mib("VmHWM")
    if variant in ("staged", "stream"):
        assert store.get(1).size == size, "the checkpoint has the wrong size"
    print(json.dumps({"seconds": seconds, "extra": peak - before, "peak": peak, "cpu": cpu}))
    """
)

UPLOADS = ("put_file", "boto3", "staged", "stream")
DOWNLOADS = ("get", "boto3_get", "download")


def server_cpu(server: SeaweedFS) -> float:
    """CPU seconds the SeaweedFS process has used so far (user + system)."""
    assert server.process is not None
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_child(
    variant: str, url: str, server: SeaweedFS, local: Path, work: Path, extra: dict[str, Any]
) -> dict[str, float]:
    cpu0 = server_cpu(server)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            variant,
            url,
            json.dumps(server.storage_options),
            str(local),
            str(work),
            json.dumps(extra),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{proc.stderr}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["server_cpu"] = server_cpu(server) - cpu0  # the server's work for this variant (and idle noise)
    return result


def vacuum(server: SeaweedFS) -> None:
    """Have SeaweedFS reclaim the space of deleted objects (a 1 GiB round leaves a few GiB otherwise)."""
    with contextlib.suppress(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{server.master}/vol/vacuum?garbageThreshold=0.01", timeout=300)


def summary(name: str, runs: list[dict[str, float]], base: list[dict[str, float]]) -> dict[str, Any]:
    seconds = [r["seconds"] for r in runs]
    ratios = [r["seconds"] / b["seconds"] for r, b in zip(runs, base, strict=True)]
    return {
        "variant": name,
        "seconds": {"min": min(seconds), "median": statistics.median(seconds), "max": max(seconds)},
        "ratio": {"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)},
        "extra_mib_max": max(r["extra"] for r in runs),
        "client_cpu_median": statistics.median(r["cpu"] for r in runs),
        "server_cpu_median": statistics.median(r["server_cpu"] for r in runs),
    }


def print_table(title: str, rows: list[dict[str, Any]], size_mib: int) -> None:
    print(f"\n{title}")
    print(
        f"{'variant':<11} {'s min':>7} {'s median':>9} {'s max':>7} {'MiB/s':>7} "
        f"{'ratio min':>9} {'median':>7} {'max':>6} {'extra MiB':>10} {'CPU client':>10} {'server':>6}"
    )
    for row in rows:
        s, r = row["seconds"], row["ratio"]
        print(
            f"{row['variant']:<11} {s['min']:7.2f} {s['median']:9.2f} {s['max']:7.2f} {size_mib / s['median']:7.0f} "
            f"{r['min']:9.2f} {r['median']:7.2f} {r['max']:6.2f} {row['extra_mib_max']:10.0f} "
            f"{row['client_cpu_median']:10.1f} {row['server_cpu_median']:6.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--part-mib", type=int, default=None, help="storage_options['part_size'] in MiB")
    parser.add_argument("--concurrency", type=int, default=None, help="storage_options['transfer_concurrency']")
    parser.add_argument("--only", choices=("upload", "download", "both"), default="both")
    parser.add_argument(
        "--json", type=Path, default=None, help="where to write the results (bench/out/<script>-<size>MiB.json)"
    )
    args = parser.parse_args()
    extra: dict[str, Any] = {}
    if args.part_mib:
        extra["part_size"] = args.part_mib * MiB
    if args.concurrency:
        extra["transfer_concurrency"] = args.concurrency
    have_boto3 = importlib.util.find_spec("boto3") is not None
    uploads = [v for v in UPLOADS if have_boto3 or v != "boto3"] if args.only != "download" else []
    downloads = [v for v in DOWNLOADS if have_boto3 or v != "boto3_get"] if args.only != "upload" else []
    work = Path(tempfile.mkdtemp(prefix="ckptstore-bench-s3-"))
    results: dict[str, Any] = {"size_mib": args.size_mib, "repeats": args.repeats, "options": extra}
    try:
        local = work / "data.bin"
        with open(local, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(MiB))
        with SeaweedFS() as server:
            fs = server.filesystem()
            up: dict[str, list[dict[str, float]]] = {v: [] for v in uploads}
            down: dict[str, list[dict[str, float]]] = {v: [] for v in downloads}
            source = None
            if downloads:  # one checkpoint (and one plain object) to download, the same bytes
                source = server.url(f"bench-src-{uuid.uuid4().hex[:8]}")
                run_child("staged", source, server, local, work, extra)
                fs.put_file(str(local), source.replace("s3://", "") + "/plain.bin")
            for round_ in range(args.repeats):
                for i in range(len(uploads)):
                    variant = uploads[(i + round_) % len(uploads)]
                    url = server.url(f"bench-{uuid.uuid4().hex[:8]}")
                    up[variant].append(run_child(variant, url, server, local, work, extra))
                    fs.rm(url.replace("s3://", ""), recursive=True)
                    vacuum(server)
                for i in range(len(downloads)):
                    variant = downloads[(i + round_) % len(downloads)]
                    assert source is not None
                    opts = {**extra, "remote": source.replace("s3://", "") + "/plain.bin"}
                    down[variant].append(run_child(variant, source, server, local, work, opts))
                    for out in work.glob("out-*"):
                        shutil.rmtree(out) if out.is_dir() else out.unlink()
                print(f"round {round_ + 1}/{args.repeats} done", file=sys.stderr, flush=True)
        rounds = f"{args.repeats} interleaved rounds"
        print(f"{args.size_mib} MiB, SeaweedFS S3 on 127.0.0.1, {rounds}, options {extra or 'default'}")
        if uploads:
            rows = [summary(v, up[v], up["put_file"]) for v in uploads]
            results["upload"] = rows
            print_table(
                "upload (ratio: time / s3fs.put_file's in the same round; lower is faster)", rows, args.size_mib
            )
        if downloads:
            rows = [summary(v, down[v], down["get"]) for v in downloads]
            results["download"] = rows
            print_table("download (ratio: time / s3fs.get's in the same round; lower is faster)", rows, args.size_mib)
        out = args.json or OUT / f"object_store_transfer-{args.size_mib}MiB.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
        print(f"results: {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
