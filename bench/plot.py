"""Plot seconds per GiB of every path measured by the local benches (``bench/out/*.json``).

One panel per bench (save, load), one group of bars per size, one bar per path: the median, with
the min and max of the interleaved runs as the error bar. Written to ``docs/img/performance.png``.

    python bench/plot.py [--out docs/img/performance.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
DEFAULT = Path(__file__).resolve().parent.parent / "docs" / "img" / "performance.png"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(DEFAULT))
    p.add_argument(
        "--benches", default="save_formats,load_verify_touch,load_verify", help="comma-separated bench names"
    )
    args, _ = p.parse_known_args()  # tox passes the benches' options (--size-mib) here too
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = [b for b in args.benches.split(",") if b]
    records: dict[str, list[dict]] = {b: [] for b in benches}
    for f in sorted(OUT.glob("*.json")):
        rec = json.loads(f.read_text())
        if rec.get("bench") in records:
            records[rec["bench"]].append(rec)
    benches = [b for b in benches if records[b]]
    if not benches:
        raise SystemExit(f"no results in {OUT}: run bench/save_formats.py and bench/load_verify.py first")
    fig, axes = plt.subplots(len(benches), 1, figsize=(11, 4.2 * len(benches)), squeeze=False)
    for ax, bench in zip(axes[:, 0], benches, strict=True):
        recs = sorted(records[bench], key=lambda r: r["size_mib"])
        labels: list[str] = []
        for rec in recs:
            for row in rec["rows"]:
                if row["variant"] not in labels:
                    labels.append(row["variant"])
        width = 0.8 / max(len(recs), 1)
        for i, rec in enumerate(recs):
            gib = rec["bytes"] / 2**30
            by = {row["variant"]: row for row in rec["rows"]}
            xs, ys, lo, hi = [], [], [], []
            for j, label in enumerate(labels):
                if label in by:
                    row = by[label]
                    xs.append(j + (i - (len(recs) - 1) / 2) * width)
                    ys.append(row["median"] / gib)
                    lo.append((row["median"] - row["min"]) / gib)
                    hi.append((row["max"] - row["median"]) / gib)
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=f"{rec['size_mib']} MiB ({rec['repeat']} runs)")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=8)
        ax.set_ylabel("seconds per GiB (median; bars: min-max)")
        ax.set_title(f"{bench}: baseline '{recs[0]['baseline']}'")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
