"""Every row against the forward model, before export and training (docs/DESIGN.md §8).

``forward_check`` fits a spread sample of rows well (orientation, angle offset, radial spacing,
noise); this module asks cheaper questions of *every* row, so that a few rows cannot hide:

* per row, the calibration c_i of y ≈ c_i · m in the declared orientation, and the residual of each
  of the four flips: a row that fits another flip markedly better is mis-oriented (a partly mirrored
  split; a split mostly so is left to forward_check's fit, which names the orientation to declare);
* a row whose c_i is far from its split's median is in other units (one row ×1000);
* splits whose median calibrations disagree, or a declared calibration that contradicts the fit;
* μ outside the physical range for 1/cm (water is 0.096 /cm at 511 keV), naming the likely unit;
* the angle offset: every row's residual at the declared offset and ±1…±3 bins around it, pooled per
  split. A whole-bin offset moves the residual by well under 1 % at 180 angles (the noise dominates it),
  so a gain threshold cannot see it; the *location* of the pooled minimum can: on the built-in data it
  sits within 0.02 bins of the truth, on data from another projector (skimage) within 0.35 bins. Every
  split's minimum at the same other whole bin, at least 0.6 bins from the declared one, is refused; splits
  that disagree (a projector too unlike this one to tell) are left to check-data's note.

One projection of μ and of the activity per row; the report is cached under the dataset's
fingerprint (which covers every row), so a dataset version is checked once.
"""
from __future__ import annotations

import json

import numpy as np
import torch

from shared.files.atomic import atomic_write_json
from shared.files.cache import cache_dir

from .dataset_io import DataError
from .orientation import ORIENTATIONS, orient, stored

ROW_CHECK_VERSION = 2
MIRROR_GAIN = 1.25  # a row is mis-oriented when another flip's residual is below its declared one / 1.25
UNIT_FACTOR = 1.5  # a row's c_i beyond ×/÷ 1.5 of its split's median is in other units (spread here ~0.5 %)
SPLIT_SPREAD = 0.10  # split medians of c (and a declared c) agree within 10 %
MU_RANGE = (0.05, 2.0)  # the largest μ of a slice, 1/cm at 511 keV: soft tissue 0.096, bone 0.17, metal < 2
OFFSET_WINDOW = 3  # angle offsets tried per row: declared ± 3 bins (larger ones: forward_check's full search)
OFFSET_MARGIN = 0.6  # bins between the declared offset and every split's pooled minimum for a refusal
SHOWN = 8  # rows named in a message


def _rows(n: int, batch: int):
    for s in range(0, n, batch):
        yield s, min(n, s + batch)


@torch.no_grad()
def _split_fits(data, split: str, physics, batch: int) -> dict:
    """Per row: c at the declared orientation, residual there and the best other flip's residual, max μ."""
    arrays = data.split(split)
    centre = arrays.actSino.shape[1] // 2
    declared = (data.orientation, data.angle_offset)
    c, r_declared, r_other, flip_other, mu_max = [], [], [], [], 0.0
    shifts = range(-OFFSET_WINDOW, OFFSET_WINDOW + 1)
    offset_res2 = np.zeros(len(shifts))  # Σ over rows of ‖y − c_i·roll(m, declared + j)‖², each row its own c_i
    yy_total = 0.0
    for s, e in _rows(arrays.n, batch):
        y = np.asarray(stored(arrays.actSino)[s:e, centre], dtype=np.float64)
        mu = np.array(arrays.attenMap[s:e], dtype=np.float32)
        act = np.array(arrays.actMap[s:e], dtype=np.float32)
        mu_max = max(mu_max, float(mu.max()) if mu.size else 0.0)
        m = physics.expected(torch.from_numpy(act).double(), torch.from_numpy(mu).double())[:, 0].numpy()
        yy = (y * y).sum(axis=(1, 2))
        fits = {}
        for o in ORIENTATIONS:
            t = orient(m, o, declared[1])
            tt, yt = (t * t).sum(axis=(1, 2)), (y * t).sum(axis=(1, 2))
            res2 = np.where(tt > 0, yy - yt ** 2 / np.maximum(tt, 1e-300), yy)
            fits[o] = (np.where(tt > 0, yt / np.maximum(tt, 1e-300), np.nan),
                       np.sqrt(np.maximum(res2, 0) / np.maximum(yy, 1e-300)))
        c += fits[declared[0]][0].tolist()
        r_declared += fits[declared[0]][1].tolist()
        for j, dk in enumerate(shifts):
            t = orient(m, declared[0], declared[1] + dk)
            tt, yt = (t * t).sum(axis=(1, 2)), (y * t).sum(axis=(1, 2))
            offset_res2[j] += float(np.where(tt > 0, yy - yt ** 2 / np.maximum(tt, 1e-300), yy).sum())
        yy_total += float(yy.sum())
        others = [o for o in ORIENTATIONS if o != declared[0]]
        stack = np.stack([fits[o][1] for o in others])
        r_other += stack.min(axis=0).tolist()
        flip_other += [others[i] for i in stack.argmin(axis=0)]
    return {"c": c, "residual": r_declared, "other_residual": r_other, "other_flip": flip_other, "mu_max": mu_max,
            "rows_zero": [i for i, v in enumerate(c) if not np.isfinite(v)],
            "angle_offset": _pooled_offset(offset_res2, yy_total, declared[1])}


def _pooled_offset(res2: np.ndarray, yy: float, declared: int) -> dict:
    """The pooled residual curve's minimum: its whole bin and (parabola through it and its neighbours)
    its sub-bin location, both as absolute offsets."""
    i = int(np.argmin(res2))
    vertex = float(i)
    if 0 < i < len(res2) - 1:
        f0, f1, f2 = res2[i - 1:i + 2]
        curv = f0 - 2 * f1 + f2
        vertex += 0.5 * (f0 - f2) / curv if curv > 0 else 0.0
    rel = np.sqrt(np.maximum(res2, 0) / max(yy, 1e-300))
    return {"best": declared + i - OFFSET_WINDOW, "location": declared + vertex - OFFSET_WINDOW,
            "residual_at_best": float(rel[i]), "residual_at_declared": float(rel[OFFSET_WINDOW])}


def _shown(rows: list[int]) -> str:
    return f"{rows[:SHOWN]}" + (f" (+{len(rows) - SHOWN} more)" if len(rows) > SHOWN else "")


def check_every_row(data, projector=None, batch: int = 64) -> dict:
    """``{"splits": {split: {c, mu_max, …}}, "errors": [...]}`` for every row of every split (cached)."""
    cache = cache_dir("row_checks") / f"v{ROW_CHECK_VERSION}-{data.fingerprint()[:40]}.json"
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        pass
    from shared.physics.acquisition import Acquisition
    from shared.physics.projector import Projector

    physics = Acquisition(projector or Projector(data.geometry))  # c = 1: each row's c is fitted
    report, errors = {"splits": {}}, []
    for split in data.splits:
        f = _split_fits(data, split, physics, batch)
        sino, amap, mmap = (data.path(split, k) for k in ("actSino", "actMap", "attenMap"))
        lo, hi = MU_RANGE
        if f["mu_max"] > 0 and not lo <= f["mu_max"] <= hi:
            unit = "1/mm" if f["mu_max"] < lo else "1/m"
            errors.append(f"{mmap}: largest μ is {f['mu_max']:.4g}, outside {lo}–{hi} for 1/cm at 511 keV (water "
                          f"0.096 /cm): it looks like {unit}; store μ in 1/cm")
        c = np.array(f["c"], dtype=np.float64)
        valid = np.isfinite(c) & (c > 0)
        median = float(np.median(c[valid])) if valid.any() else float("nan")
        mirrored = [i for i, (rd, ro) in enumerate(zip(f["residual"], f["other_residual"])) if rd > MIRROR_GAIN * ro]
        if mirrored and 2 * len(mirrored) <= len(c):  # most rows: the whole split's orientation, which the
            # sampled fit (forward_check) reports with its fix
            flips = sorted({f["other_flip"][i] for i in mirrored})
            errors.append(f"{sino}: rows {_shown(mirrored)} of {len(c)} fit the forward model markedly better as "
                          f"{', '.join(flips)} than as the declared {data.orientation!r}; those sinograms are stored "
                          f"in another orientation than the rest")
        odd = [i for i in range(len(c)) if valid[i] and not 1 / UNIT_FACTOR <= c[i] / median <= UNIT_FACTOR]
        odd += [i for i in range(len(c)) if not valid[i] and i not in f["rows_zero"]]
        if odd:
            errors.append(f"{sino}: rows {_shown(sorted(odd))} have a calibration c far from the split's {median:.4g} "
                          f"(e.g. row {odd[0]}: {c[odd[0]]:.4g}); are {amap.name} and {sino.name} of those rows in "
                          f"the same units as the others?")
        report["splits"][split] = {"rows": len(c), "c_median": median, "mu_max": f["mu_max"],
                                   "mirrored_rows": mirrored, "odd_calibration_rows": sorted(odd),
                                   "mostly_mirrored": 2 * len(mirrored) > len(c), "angle_offset": f["angle_offset"]}
    errors += _offset_errors(data, report["splits"])
    # a mostly mis-oriented split's c (fitted in the declared orientation) means nothing: left to the fit
    medians = {s: v["c_median"] for s, v in report["splits"].items()
               if np.isfinite(v["c_median"]) and not v["mostly_mirrored"]}
    if medians:
        ref = float(np.median(list(medians.values())))
        apart = {s: m for s, m in medians.items() if abs(m / ref - 1) > SPLIT_SPREAD}
        if apart:
            errors.append(f"{data.root}: the splits' calibrations disagree ({', '.join(f'{s} c = {m:.4g}' for s, m in medians.items())}); "
                          f"their activity files are in different units")
        if data.calibration is not None and abs(float(data.calibration) / ref - 1) > SPLIT_SPREAD:
            errors.append(f"{data.root}/dataset.json: calibration = {data.calibration:g} is declared, but the data fit "
                          f"c = {ref:.4g}; correct or remove the declared value")
        report["c"] = ref
    report["errors"] = errors
    atomic_write_json(cache, report)
    return report


def _offset_errors(data, splits: dict) -> list[str]:
    """A whole-bin angle offset every split agrees on, clear of the declared one (see the module note)."""
    fits = {s: v["angle_offset"] for s, v in splits.items() if not v["mostly_mirrored"]}
    bests = {f["best"] for f in fits.values()}
    if len(bests) != 1 or (k := bests.pop()) == data.angle_offset:
        return []
    if any(abs(f["location"] - data.angle_offset) < OFFSET_MARGIN for f in fits.values()):
        return []
    where = ", ".join(f"{s} {f['location']:+.2f}" for s, f in fits.items())
    return [f"{data.root}: every split's sinograms fit the forward model best at angle offset {k} bins (the "
            f"pooled residual of all rows is least at {where} bins), but dataset.json declares geometry.angle_offset = "
            f"{data.angle_offset}; if the scanner's angles start there, set geometry.angle_offset = {k} in "
            f"dataset.json (or roll the sinograms)"]


def require_every_row(data, log=print) -> dict:
    """``check_every_row``; the first error becomes the one ``error:`` line (the others printed above it)."""
    report = check_every_row(data)
    for line in report["errors"][1:]:
        log(f"  [FAIL] {line}")
    if report["errors"]:
        more = len(report["errors"]) - 1
        raise DataError(report["errors"][0] + (f" (+{more} more above)" if more else ""))
    return report
