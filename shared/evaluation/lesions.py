"""Contrast recovery (CRC) per lesion and background variability (BV): the PET figures of merit
for data whose lesions are known (a dataset's ``lesionMap``; docs/DESIGN.md §9b).

For lesion j (label j of a sample) with region L and a background ring B around it:

    CRC_j = (mean_rec(L) / mean_rec(B) − 1) / (mean_true(L) / mean_true(B) − 1)
    BV_j  = std_B(rec − true) / mean_true(B)

CRC is 1 when the reconstruction keeps the lesion's true contrast to its surroundings, 0 when the
lesion vanishes; the same formula serves hot (ratio > 1) and cold (ratio < 1) lesions.  The truth
is the PSF-smoothed activity map, so CRC measures recovery relative to the data's own resolution.
The synthetic torso has no uniform background (NEMA's BV is the spread of background ROI means in
a uniform phantom), so BV is the spread of the *error* in the ring relative to its true mean: noise
and artefacts around the lesion, not anatomy.

B is the part of the body (μ > 0) at distances r + GAP … r + GAP + max(WIDTH_MIN, r) pixels from
the lesion's centroid (r: radius of a disc with the lesion's area), away from every lesion by more
than GAP pixels, so partial-volume spill from the lesion does not count as background.  Lesions
smaller than MIN_PIXELS, with fewer than MIN_BACKGROUND background pixels, or whose true contrast
|ratio − 1| is below MIN_CONTRAST (a lesion as bright as the organ it sits in) are skipped: their
CRC is a ratio of noise.
"""
from __future__ import annotations

import numpy as np

from shared.evaluation.tables import markdown_table

GAP, WIDTH_MIN = 2.0, 3.0
MIN_PIXELS, MIN_BACKGROUND, MIN_CONTRAST = 4, 8, 0.25


def lesion_rois(labels: np.ndarray, body: np.ndarray) -> list[dict]:
    """The lesions of one sample ([H, W] labels and body mask) as dicts with ``label``, ``roi``,
    ``background`` (boolean masks) and ``radius_px``."""
    H, W = labels.shape
    yy, xx = np.mgrid[:H, :W]
    found = [int(j) for j in np.unique(labels) if j > 0]
    if not found:
        return []
    any_lesion = labels > 0
    near_lesion = np.zeros_like(any_lesion)  # every lesion's disc widened by GAP
    out = []
    for j in found:
        roi = labels == j
        cy, cx = yy[roi].mean(), xx[roi].mean()
        r = float(np.sqrt(roi.sum() / np.pi))
        out.append({"label": j, "roi": roi, "radius_px": r, "centre": (cy, cx)})
        near_lesion |= np.hypot(yy - cy, xx - cx) <= r + GAP
    for les in out:
        cy, cx = les.pop("centre")
        d = np.hypot(yy - cy, xx - cx)
        r = les["radius_px"]
        les["background"] = body & ~near_lesion & ~any_lesion & (d >= r + GAP) & (d <= r + GAP + max(WIDTH_MIN, r))
    return out


def lesion_metrics(recons: dict[str, np.ndarray], truth: np.ndarray, labels: np.ndarray, body: np.ndarray,
                   pixel_mm: float) -> list[dict]:
    """One row per measurable lesion: sample, label, kind (hot/cold), radius_mm, true_ratio, and
    ``crc_<method>`` / ``bv_<method>`` for each reconstruction in ``recons`` ({method: [N, 1, H, W]})."""
    rows = []
    for i in range(truth.shape[0]):
        t = truth[i, 0].astype(np.float64)
        for les in lesion_rois(labels[i, 0], body[i, 0]):
            roi, bg = les["roi"], les["background"]
            if roi.sum() < MIN_PIXELS or bg.sum() < MIN_BACKGROUND:
                continue
            t_bg = t[bg].mean()
            if t_bg <= 0:
                continue
            ratio = t[roi].mean() / t_bg
            if abs(ratio - 1) < MIN_CONTRAST:
                continue
            row = {"sample": i, "label": les["label"], "kind": "hot" if ratio > 1 else "cold",
                   "radius_mm": les["radius_px"] * pixel_mm, "true_ratio": ratio}
            for m, rec in recons.items():
                r = rec[i, 0].astype(np.float64)
                r_bg = r[bg].mean()
                row[f"crc_{m}"] = (r[roi].mean() / r_bg - 1) / (ratio - 1) if abs(r_bg) > 1e-12 else float("nan")
                row[f"bv_{m}"] = float(np.std(r[bg] - t[bg]) / t_bg)
            rows.append(row)
    return rows


def by_method(rows: list[dict], methods) -> dict[str, dict[str, np.ndarray]]:
    """{method: {"crc_hot", "crc_cold", "bv": values over lesions}} from lesion_metrics rows."""
    out = {}
    for m in methods:
        out[m] = {f"crc_{kind}": np.array([r[f"crc_{m}"] for r in rows if r["kind"] == kind]) for kind in ("hot", "cold")}
        out[m]["bv"] = np.array([r[f"bv_{m}"] for r in rows])
    return out


def format_lesions(lesions: dict) -> str:
    """Mean [95 % CI] of CRC (hot, cold) and BV per method, over lesions (a summary.json "lesions" entry)."""
    counts = {"crc_hot": lesions["n"]["hot"], "crc_cold": lesions["n"]["cold"], "bv": sum(lesions["n"].values())}
    keys = [k for k in counts if any(k in v for v in lesions["statistics"].values())]

    def cell(s):
        return f"{s['mean']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]" if s else ""
    return markdown_table(["method", *(f"{k} (n={counts[k]})" for k in keys)],
                          [[m, *(cell(v.get(k)) for k in keys)] for m, v in lesions["statistics"].items()])
