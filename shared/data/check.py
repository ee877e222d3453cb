"""Check a dataset folder completely: ``frozenflow check-data --data DIR [--json OUT]``.

Opening a dataset checks its format, shapes and a spread sample of rows; this command reads every
row of every file once (in blocks, without growing memory) and reports, per split and array, the
value range and the first row holding NaN/Inf or a negative value where none is allowed.  Exit
code 0 when every file is clean, 1 otherwise.
"""
from __future__ import annotations

import sys

import numpy as np

from shared.atomic import atomic_write_json
from shared.cli import new_parser, run_main

from .dataset_io import KINDS, NONNEGATIVE_KINDS, open_dataset, read_rows

BLOCK_ROWS = 64


def scan_array(arr: np.ndarray, nonnegative: bool) -> dict:
    """min/max/mean over all rows, and the first non-finite (and, if required, negative) row."""
    lo, hi, total, count = np.inf, -np.inf, 0.0, 0
    first_nonfinite = first_negative = None
    for s in range(0, arr.shape[0], BLOCK_ROWS):
        block = read_rows(arr, s, s + BLOCK_ROWS).reshape(min(BLOCK_ROWS, arr.shape[0] - s), -1)
        finite = np.isfinite(block).all(axis=1)
        if first_nonfinite is None and not finite.all():
            first_nonfinite = s + int(np.argmin(finite))
        good = block[finite]
        if good.size:
            lo, hi = min(lo, float(good.min())), max(hi, float(good.max()))
            total += float(good.sum(dtype=np.float64))
            count += good.size
            if nonnegative and first_negative is None and good.min() < 0:
                rows = np.flatnonzero(finite)[(good < 0).any(axis=1)]
                first_negative = s + int(rows[0])
    return {"shape": list(arr.shape), "min": lo if count else None, "max": hi if count else None,
            "mean": total / count if count else None, "first_nonfinite_row": first_nonfinite,
            "first_negative_row": first_negative}


def check_dataset(folder, log=print) -> dict:
    """Scan every file of the dataset; returns the report (``problems`` lists one line per fault)."""
    data = open_dataset(folder, check_finite=False)  # format and shapes; the values are scanned below
    report = {"dataset": str(data.root), "fingerprint": data.fingerprint(), "splits": {}, "problems": []}
    for split in data.splits:
        arrays = data.split(split)
        report["splits"][split] = {}
        for kind in KINDS:
            arr = getattr(arrays, kind)
            if arr is None:
                continue
            r = scan_array(arr, kind in NONNEGATIVE_KINDS)
            report["splits"][split][kind] = r
            path = data.path(split, kind)
            if r["first_nonfinite_row"] is not None:
                report["problems"].append(f"{path}: row {r['first_nonfinite_row']} contains NaN/Inf")
            if r["first_negative_row"] is not None:
                report["problems"].append(f"{path}: row {r['first_negative_row']} has negative values ({kind} "
                                          f"must be >= 0)")
            rng = f"[{r['min']:.4g}, {r['max']:.4g}], mean {r['mean']:.4g}" if r["min"] is not None else "no finite values"
            log(f"  {split:>5} {kind:<9} {tuple(r['shape'])}  {rng} {data.units.get(kind, '')}")
    return report


def parser():
    p = new_parser("frozenflow check-data", __doc__)
    p.add_argument("--data", required=True, help="dataset folder (dataset.json + .npy files)")
    p.add_argument("--json", help="also write the report as JSON here")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    print(f"check-data {args.data}")
    report = check_dataset(args.data)
    if args.json:
        atomic_write_json(args.json, report)
    for line in report["problems"]:
        print(f"  [FAIL] {line}")
    print("check-data: " + ("every file is clean" if not report["problems"] else f"{len(report['problems'])} problem(s)"))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
