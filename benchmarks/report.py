"""Collect the benchmarks' result files into one table: benchmarks/results/latest.{json,md}.

``python -m benchmarks.report [--suffix _small]`` reads projector, export, reader, checksum and store_size
results (each written by its own benchmark) and keeps the headline ratios with their targets.
"""
from __future__ import annotations

import argparse
import json

from .common import RESULTS_DIR, environment, markdown_table


def _load(name):
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def figures(suffix: str) -> list[dict]:
    rows = []
    p = _load("projector" + suffix) or _load("projector")
    if p:
        r = p["results"]
        for key, label in (("ours_vs_skimage", "projector: ours / skimage radon (batch 32)"),
                           ("ours_vs_astra_direct", "projector: ours / astra direct CPU (batch 32)")):
            rows.append({"figure": label, "value": r["ratios"][key], "target": f">= {r['targets'][key]['target']:g}",
                         "met": r["targets"][key]["met"], "measured": p["created_utc"]})
    e = _load("export" + suffix)
    if e:
        r = e["results"]
        t = r["throughput"][0]
        rows.append({"figure": f"export / teacher inference alone ({t['config']})", "value": t["ratio"],
                     "target": f">= {t['target']:g}", "met": t["meets_target"], "measured": e["created_utc"]})
        m = r["memory"][-1]
        rows.append({"figure": f"export peak RSS growth, N -> {m['samples']} samples", "value": m["rss_growth"],
                     "target": "few %", "met": m["meets_target"], "measured": e["created_utc"]})
    rd = _load("reader" + suffix)
    if rd:
        r = rd["results"]
        rows.append({"figure": "reader / raw npy memmap (default store, 2 workers)",
                     "value": r["target"]["default_2_workers_vs_raw"], "target": f">= {r['target']['target_vs_raw']:g}",
                     "met": r["target"]["default_2_workers_vs_raw"] >= r["target"]["target_vs_raw"],
                     "measured": rd["created_utc"]})
    c = _load("checksum" + suffix) or _load("checksum")
    if c:
        for row in c["results"]["rows"]:
            if row["source"].startswith("zarr + crc32c"):
                rows.append({"figure": f"store {row['op']} with crc32c / without (per-sample chunks)",
                             "value": row["vs_no_checksum"], "target": "", "met": "", "measured": c["created_utc"]})
    s = _load("store_size" + suffix)
    if s:
        for row in s["results"]["rows"]:
            if row["dtype"] == "float16" and row["shard"] in ("-", None, 0) and row["codec"] in ("none", "lz4"):
                rows.append({"figure": f"store KiB/sample float16 {row['codec']}", "value": row["stored_kb"],
                             "target": "", "met": "", "measured": s["created_utc"]})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suffix", default="_small", help="result-file suffix to prefer (\"\" for the full runs)")
    args = ap.parse_args(argv)
    rows = figures(args.suffix)
    env = environment()
    table = markdown_table(rows, ["figure", "value", "target", "met", "measured"])
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "latest.json").write_text(json.dumps({"environment": env, "figures": rows}, indent=1))
    import torch

    machine = (f"{env.get('cpu_count', '?')} CPUs ({env.get('machine', '')}), {env.get('platform', '')}, "
               f"torch {torch.__version__}, load average at report {env.get('loadavg_1_5_15')}")
    (RESULTS_DIR / "latest.md").write_text(f"Machine: {machine}\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
