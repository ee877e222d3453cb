"""Check a dataset folder: ``frozenflow check-data --data DIR [--json OUT] [--samples K]``.

Two parts.  (1) Every row of every file is read once (in blocks, without growing memory): value
ranges and the first row holding NaN/Inf, or a negative value where none is allowed.  (2) On a
spread sample of K rows per split the forward model E[actSino] = c · exp(−P attenMap) · P actMap is
fitted (``shared.data.forward_check``): calibration c, orientation and angle offset, radial bin
size, residual against Poisson noise, and attenSino against P attenMap.  Exit code 0 when the data
is clean and consistent; otherwise one ``error:`` line names the first finding and its fix.
"""
from __future__ import annotations

import sys

import numpy as np

from shared.files.atomic import atomic_write_json
from shared.files.outputs import FILE_MARK, claim_file

REPORT_KIND = "check-data report"
from shared.cli import new_parser, run_main

from .dataset_io import KINDS, NONNEGATIVE_KINDS, DataError, Dataset, on_file, open_dataset, read_rows
from .scan import float32_limit
from shared.errors import InputError

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


def check_dataset(data, log=print) -> dict:
    """Scan every file of the dataset (folder or opened); returns the report (``problems``: one line per fault)."""
    data = data if isinstance(data, Dataset) else open_dataset(data, check_finite=False)  # values scanned below
    report = {"dataset": str(data.root), "fingerprint": data.fingerprint(), "splits": {}, "problems": []}
    if data.resize:
        g, (r, a) = data.geometry, data.resize["from"]
        log(f"  sinograms stored at {r}x{a}, resampled on read ({data.resize['method']}) to the working "
            f"{g.n_radial}x{g.n_angles} (geometry.resize); the shapes and the fit below are of what is read")
    if data.atten_calibration != 1.0:
        log(f"  attenSino divided by atten_calibration = {data.atten_calibration:g} on read")
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
            raw = on_file(arr)
            limit = float32_limit(raw.dtype)
            if limit is not None and r["min"] is not None and max(abs(r["min"]), abs(r["max"])) > limit:
                report["problems"].append(f"{path}: values up to {max(abs(r['min']), abs(r['max'])):g} do not fit "
                                          f"float32, which FrozenFlow reads {raw.dtype} as; rescale the file")
            if r["first_nonfinite_row"] is not None:
                report["problems"].append(f"{path}: row {r['first_nonfinite_row']} contains NaN/Inf")
            if r["first_negative_row"] is not None:
                report["problems"].append(f"{path}: row {r['first_negative_row']} has negative values ({kind} "
                                          f"must be >= 0)")
            rng = f"[{r['min']:.4g}, {r['max']:.4g}], mean {r['mean']:.4g}" if r["min"] is not None else "no finite values"
            cast = f" ({raw.dtype} on file, read as float32)" if raw.dtype != np.float32 else ""
            log(f"  {split:>5} {kind:<9} {tuple(r['shape'])}  {rng} {data.units.get(kind, '')}{cast}")
    return report


def describe_fit(split: str, kind: str, fit: dict) -> str:
    o, c, r, s = fit["orientation"], fit["calibration"], fit["residual"], fit["radial_spacing"]
    noise = f" (Poisson alone {r['poisson']:.3f}, ratio {r['ratio_to_noise']:.2f})" if r.get("counts") else ""
    return (f"  {split:>5} {kind:<9} c = {c['c']:.4g} (per sample {c['per_sample_min']:.4g}…{c['per_sample_max']:.4g}), "
            f"orientation {o['best']} offset {o['angle_offset']}, radial spacing ×{s['best_factor']:g}, "
            f"residual {r['relative']:.3f}{noise}")


def parser():
    p = new_parser("frozenflow check-data", __doc__)
    p.add_argument("--data", required=True, help="dataset folder (dataset.json + .npy files)")
    p.add_argument("--json", help="also write the report as JSON here (a new file, or a report check-data wrote)")
    p.add_argument("--samples", type=int, default=8, help="rows per split used to fit the forward model")
    return p


def _fail(problems: list[str]) -> None:
    """Print all but the first problem; raise the first (it becomes the one ``error:`` line)."""
    for line in problems[1:]:
        print(f"  [FAIL] {line}")
    if problems:
        raise DataError(problems[0] + (f" (+{len(problems) - 1} more above)" if len(problems) > 1 else ""))


def main(argv=None) -> int:
    from .forward_check import check_forward_model, offset_notes

    args = parser().parse_args(argv)
    if args.samples < 1:
        raise InputError(f"--samples must be >= 1, got {args.samples}")
    if args.json:  # before any work: an existing file that is not our report is never replaced
        claim_file(args.json, REPORT_KIND, "--json")
    print(f"check-data {args.data}")
    data = open_dataset(args.data, check_finite=False)  # format and shapes; every value is scanned next
    report = check_dataset(data)
    _fail(report["problems"])  # bad input: one error line, nothing written
    from .row_check import check_every_row

    report["every_row"] = rows = check_every_row(data)
    for split, r in rows["splits"].items():
        print(f"  {split:>5} every row ({r['rows']}): median c = {r['c_median']:.4g}, largest μ {r['mu_max']:.4g} /cm, "
              f"{len(r['mirrored_rows'])} mirrored, {len(r['odd_calibration_rows'])} in other units, "
              f"angle offset fits best at {r['angle_offset']['location']:+.2f} bins")
    report["forward_model"] = fit = check_forward_model(data, samples=args.samples)
    print(f"forward model E[actSino] = c · exp(-P attenMap) · P actMap, {args.samples} rows per split:")
    for split, entry in fit["splits"].items():
        for kind in ("actSino", "attenSino"):
            if kind in entry:
                print(describe_fit(split, kind, entry[kind]))
    print(f"  calibration c = {fit['calibration']['c']:.4g}"
          + (f" (declared {fit['calibration']['declared']:g})" if fit["calibration"]["declared"] is not None else
             " (not declared; add \"calibration\" to dataset.json to fix it)"))
    if args.json:
        atomic_write_json(args.json, {FILE_MARK: REPORT_KIND, **report})
    _fail(fit["errors"] + rows["errors"])
    notes = [n for split, e in fit["splits"].items() for n in offset_notes(data.path(split, "actSino"), e["actSino"])]
    for line in notes:
        print(f"  [note] {line}")
    print("check-data: every file is clean and follows the forward model"
          + (f" ({len(notes)} note(s) above)" if notes else ""))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
