"""``frozenflow runs [ROOT …]``: finished runs side by side — best metrics and the config keys that differ.

A run is a folder holding ``config.json`` and ``metrics.csv`` (every training run writes both; tune
trials are runs too).  The best epoch is the one with the lowest ``val_nrmse``, the default
selection metric.  Config keys equal in every listed run are left out, so the table shows what
the experiments changed.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from shared.cli import new_parser, run_main
from shared.evaluation.tables import markdown_table
from shared.errors import InputError

SHOWN = ("val_nrmse", "val_psnr", "val_ssim")


def find_runs(roots) -> list[Path]:
    found = set()
    for root in map(Path, roots):
        if not root.exists():
            raise InputError(f"{root}: no such folder")
        found |= {p.parent for p in root.rglob("config.json") if (p.parent / "metrics.csv").exists()
                  and "ray" not in p.relative_to(root).parts}  # Ray's own copies under OUT/ray
    return sorted(found)


def run_row(folder: Path) -> tuple[dict, dict]:
    """(summary of the best epoch, config) of one run."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{folder / 'config.json'}: not a readable config ({' '.join(str(e).split())})") from None
    try:
        with open(folder / "metrics.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("val_nrmse")]
        if not rows:
            return {"epochs": 0}, config
        best = min(rows, key=lambda r: float(r["val_nrmse"]))
        return {"epochs": len(rows), "best epoch": int(best["epoch"]),
                **{k: float(best[k]) for k in SHOWN if k in best}}, config
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{folder / 'metrics.csv'}: not a FrozenFlow metrics table ({type(e).__name__}: "
                         f"{' '.join(str(e).split())})") from None


def table(roots) -> str:
    runs = find_runs(roots)
    if not runs:
        return "no finished runs (folders with config.json and metrics.csv) under " + ", ".join(map(str, roots))
    rows = {r: run_row(r) for r in runs}
    keys = sorted({k for _, c in rows.values() for k in c})
    differ = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for _, c in rows.values()}) > 1]
    head = ["run", "epochs", "best epoch", *SHOWN, *differ]
    body = [[str(r), s.get("epochs"), s.get("best epoch", ""), *(s.get(k, "") for k in SHOWN),
             *(json.dumps(c.get(k)) if isinstance(c.get(k), (list, dict)) else c.get(k, "—") for k in differ)]
            for r, (s, c) in rows.items()]
    return markdown_table(head, body)


def parser():
    p = new_parser("frozenflow runs", __doc__)
    p.add_argument("roots", nargs="*", default=["runs"], help="folders to search for runs")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    print(table(args.roots))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
