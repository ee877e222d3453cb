"""Collect every benchmark's results file into one table: benchmarks/results/latest.{json,md}.

``python -m benchmarks.report`` reads ``benchmarks/results/*.json``; of a benchmark's full run
(``reader.json``) and small run (``reader_small.json``) the newer one counts.  Each row names the
file it came from, so every figure in README can be traced to a file.
"""
from __future__ import annotations

import argparse
import json

from .common import RESULTS_DIR, environment, markdown_table


def _load(name):
    """The newer of ``name.json`` and ``name_small.json`` (with its file name), or None."""
    found = []
    for stem in (name, f"{name}_small"):
        path = RESULTS_DIR / f"{stem}.json"
        if path.exists():
            found.append((json.loads(path.read_text()), path.name))
    return max(found, key=lambda f: f[0].get("created_utc", "")) if found else (None, None)


def _row(label, value, target="", met="", source=None, doc=None):
    return {"figure": label, "value": value, "target": target, "met": met,
            "measured": (doc or {}).get("created_utc", "")[:10], "file": source or ""}


def figures() -> list[dict]:
    rows = []
    p, f = _load("projector")
    if p:
        r = p["results"]
        for key, label in (("ours_vs_skimage", "projector: ours / skimage radon (batch 32)"),
                           ("ours_vs_astra_direct", "projector: ours / astra direct CPU (batch 32)")):
            rows.append(_row(label, r["ratios"][key], f">= {r['targets'][key]['target']:g}",
                             r["targets"][key]["met"], f, p))
    e, f = _load("engines")
    if e:
        by = {(x["op"], x["layout"], x["engine"]): x for x in e["results"]["rows"]}
        for op, engine, label in (("write", "shard files (shipped)", "store write / raw write of the same bytes (shipped: shard files, shard 64)"),
                                  ("write", "tensorstore", "store write / raw write (tensorstore, shard 64)"),
                                  ("write", "zarr-python", "store write / raw write (zarr-python, shard 64)"),
                                  ("read", "shard files batched (shipped)", "batch read / raw memmap (shipped: shard files, shard 64)"),
                                  ("read", "tensorstore batched", "batch read / raw memmap (tensorstore, shard 64)"),
                                  ("read", "zarr-python per sample", "batch read / raw memmap (zarr-python per sample, shard 64)")):
            x = by.get((op, "shard 64", engine))
            if x:
                target = ">= 0.5" if "shipped" in label else ""
                rows.append(_row(label, x["vs_raw"], target, x["vs_raw"] >= 0.5 if target else "", f, e))
    x, f = _load("export")
    if x:
        t = x["results"]["throughput"][0]
        rows.append(_row(f"export / teacher inference alone ({t['config']})", t["ratio"], f">= {t['target']:g}",
                         t["meets_target"], f, x))
    xb, fb = _load("export_busy")
    if xb:
        t = xb["results"]["throughput"][0]
        rows.append(_row(f"export / teacher inference alone, one core busy ({t['config']})", t["ratio"],
                         source=fb, doc=xb))
        if "ratio_to_limit" in t:
            rows.append(_row("  one core's limit: teacher, then a raw write of each shard / teacher alone",
                             t["one_core_limit"], source=fb, doc=xb))
            rows.append(_row("  export / that limit", t["ratio_to_limit"], f">= {t['target']:g}", t["meets_target"],
                             fb, xb))
        m = x["results"]["memory"][-1]
        rows.append(_row(f"export peak RSS growth, N -> {m['samples']} samples", m["rss_growth"], "few %",
                         m["meets_target"], f, x))
    g, f = _load("gil")
    if g:
        by = {r["step in the other thread"]: r for r in g["results"]["rows"]}
        for k, label in (("crc32c, google_crc32c (zarr's)", "teacher beside a thread checksumming: google_crc32c"),
                         ("crc32c, crc32c package (the store's)", "teacher beside a thread checksumming: crc32c (shipped)")):
            if k in by:
                rows.append(_row(label, by[k]["teacher speed vs alone"], source=f, doc=g))
    em, f = _load("export_malloc")
    if em:
        by = {r["malloc"]: r for r in em["results"]["rows"]}
        for k, how in (("kept", "freed memory kept (shipped)"), ("glibc default", "glibc's default thresholds")):
            if k in by:
                rows.append(_row(f"export page faults per sample, {how}", by[k]["export faults per sample"],
                                 source=f, doc=em))
    wp, f = _load("write_parts")
    if wp:
        r = {x["way"]: x for x in wp["results"]["rows"]}["write_parts"]
        rows.append(_row("shard to page cache, CPU: fallocate + writev / a write per buffer", r["ratio_to_write_per_buffer"],
                         source=f, doc=wp))
    rd, f = _load("reader")
    if rd:
        v = rd["results"]["target"]
        for key, label in (("default_0_workers_vs_raw", "reader / raw npy memmap (default store, 0 workers)"),
                           ("default_2_workers_vs_raw", "reader / raw npy memmap (default store, 2 workers)"),
                           ("lz4_0_workers_vs_raw", "reader / raw npy memmap (lz4 store, 0 workers)"),
                           ("lz4_2_workers_vs_raw", "reader / raw npy memmap (lz4 store, 2 workers)")):
            if key in v:
                rows.append(_row(label, v[key], f">= {v['target_vs_raw']:g}", v[key] >= v["target_vs_raw"], f, rd))
    h, f = _load("reader_hot")
    if h:
        for key, res in h["results"]["results"].items():
            r, e = res["reader"]["vs_raw"], res["engine"]["vs_raw"]
            rows.append(_row(f"reader in-process + collate / raw per-sample memmap ({key})", r, ">= 1.0 (#25)",
                             r >= 1.0, f, h))
            rows.append(_row(f"engine batch read / raw per-sample memmap ({key})", e, ">= 0.7 (#25)", e >= 0.7, f, h))
            rows.append(_row(f"engine first read (every crc32c) / raw ({key})", res["engine, first read"]["vs_raw"],
                             source=f, doc=h))
    c, f = _load("checksum")
    if c:
        for r in c["results"]["rows"]:
            if r["source"].startswith("zarr + crc32c"):
                rows.append(_row(f"store {r['op']} with crc32c / without (per-sample chunks)", r["vs_no_checksum"],
                                 source=f, doc=c))
    s, f = _load("store_size")
    if s:
        for r in s["results"]["rows"]:
            if r["dtype"] == "float16" and r["shard"] == 64:
                rows.append(_row(f"store KiB/sample float16 {r['codec']} (shard 64)", r["stored_kb"], source=f, doc=s))
                if r["codec"] == "none" and "files_per_64" in r:
                    rows.append(_row("data files per 64 samples per split (default store)", r["files_per_64"],
                                     "<= 6", r["files_per_64"] <= 6, f, s))
    g, f = _load("gpu_memory")
    if g:
        for r in g["results"]["rows"]:
            if r["batch"] == 256 and r["precision"] == "fp32":
                est = max(r["saved_GiB"], r["cpu_peak_GiB"] or 0)
                rows.append(_row(f"training memory at batch 256, S=288, {r['model']} (GiB, CPU estimate)", est,
                                 "fits 24 GB", r["fits_24GB_with_margin"], f, g))
    j, f = _load("injection")
    if j:
        for key, label in (("quiet", "quiet"), ("one_core_busy", "one core busy"),
                           ("one_core_busy_1_thread", "one core busy, 1 torch thread")):
            if key in j["results"]:
                r = j["results"][key]["ratio_hooks_to_concat"]
                rows.append(_row(f"student step, hooks + side convs / widened concat ({label})", r, "<= 1.03",
                                 r <= 1.03, f, j))
    k, f = _load("kills")
    if k:
        r = k["results"]
        rows.append(_row(f"export killed {r['kills_injected']} times: resumed byte-identical",
                         f"{r['survived']}/{r['rounds']}", "all", r["survived"] == r["rounds"], f, k))
    t, f = _load("kills_train")
    if t:
        r = t["results"]
        rows.append(_row(f"train-teacher killed {r['kills_injected']} times: resumed bit-identical",
                         f"{r['survived']}/{r['rounds']}", "all", r["survived"] == r["rounds"], f, t))
    t, f = _load("kills_tune")
    if t:
        r = t["results"]
        rows.append(_row(f"tune-student killed {r['kills_injected']} times: resumed whole and truthful",
                         f"{r['survived']}/{r['rounds']}", "all", r["survived"] == r["rounds"], f, t))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.parse_args(argv)
    rows = figures()
    env = environment()
    table = markdown_table(rows, ["figure", "value", "target", "met", "measured", "file"])
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "latest.json").write_text(json.dumps({"environment": env, "figures": rows}, indent=1))
    import torch

    machine = (f"{env.get('cpu_count', '?')} CPUs ({env.get('machine', '')}), {env.get('platform', '')}, "
               f"torch {torch.__version__}, load average at report {env.get('loadavg_1_5_15')}")
    (RESULTS_DIR / "latest.md").write_text(f"Machine: {machine}\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
