"""Does a dataset agree with the forward model?  (docs/DESIGN.md §8)

The pipeline assumes E[actSino] = c · exp(−P attenMap) · P actMap (shared.physics.acquisition) and the
stored sinograms in the projector P's orientation (or the one dataset.json declares).  For a spread sample of
rows this module fits, on the *stored* centre-plane sinograms:

* ``calibration``: the global factor c (least squares over the sample) and its spread per sample;
* ``orientation``: which of the four flips, and which whole-bin angle offset, fits best, with
  every flip's best residual;
* ``radial_spacing``: the radial bin size (as a factor of ``geometry.radial_mm``) that fits best;
* ``residual``: the relative residual ‖y − c·m‖/‖y‖ at the best fit and, for count data, the
  same ratio that Poisson noise alone would give;
* the same for ``attenSino`` against P attenMap, where stored.

Findings that would silently corrupt training (an undeclared or wrong orientation, a radial
spacing that fits markedly better, a residual far above the noise) are returned as ``errors``.
"""
from __future__ import annotations

import numpy as np
import torch

from .dataset_io import DataError, _sample_rows
from .orientation import ORIENTATIONS, orient, stored

SPACING_FACTORS = (0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2, 1.25)
ORIENTATION_GAIN = 1.05  # the declared orientation is wrong when its residual is ≥ 5 % above the best one's
SPACING_GAIN = 0.8  # another spacing "fits markedly better" when its residual is below 0.8× the declared one's
NOISE_RATIO_MAX = 3.0  # count data: residual may be at most 3× what Poisson noise alone gives
RESIDUAL_MAX = 0.5  # non-count data (no noise model): relative residual limit


def _lsq(y: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """(c, relative residual) of y ≈ c·t over everything."""
    tt = float((t * t).sum())
    c = float((y * t).sum()) / tt if tt > 0 else 0.0
    return c, float(np.linalg.norm(y - c * t) / max(np.linalg.norm(y), 1e-30))


def _radial_resample(m: np.ndarray, factor: float) -> np.ndarray:
    """The model sampled at radial bins ``factor`` × the geometry's spacing (linear interpolation)."""
    R = m.shape[-2]
    centre = (R - 1) / 2
    pos = (np.arange(R) - centre) * factor + centre
    lo = np.clip(np.floor(pos).astype(int), 0, R - 1)
    hi = np.clip(lo + 1, 0, R - 1)
    w = (pos - lo)[:, None]
    inside = ((pos >= 0) & (pos <= R - 1))[:, None]
    return np.where(inside, m[..., lo, :] * (1 - w) + m[..., hi, :] * w, 0.0)


def _best_offset(y: np.ndarray, t: np.ndarray, half: int) -> dict:
    """Best whole-bin angle roll of t (−half < k ≤ half) for y ≈ c·roll(t, k): every roll at once by FFT
    cross-correlation along the 2A-periodic angle axis (t extended by its radial flip)."""
    A = y.shape[-1]
    ext = np.concatenate([t, np.flip(t, axis=-2)], axis=-1)  # [K, R, 2A]
    y_pad = np.concatenate([y, np.zeros_like(y)], axis=-1)
    window = np.concatenate([np.ones(A), np.zeros(A)])
    F = np.fft.rfft
    yt = np.fft.irfft((np.conj(F(ext)) * F(y_pad)).sum(axis=(0, 1)), n=2 * A)  # <y, roll(t, k)> for k = 0..2A-1
    tt = np.fft.irfft(np.conj(F((ext ** 2).sum(axis=(0, 1)))) * F(window), n=2 * A)  # ‖roll(t, k)‖²
    yy = float((y * y).sum())
    ks = np.arange(-half + 1, half + 1)
    idx = ks % (2 * A)
    res2 = yy - yt[idx] ** 2 / np.maximum(tt[idx], 1e-300)
    i = int(np.argmin(res2))
    c = float(yt[idx[i]] / max(tt[idx[i]], 1e-300))
    return {"angle_offset": int(ks[i]), "calibration": c, "residual": float(np.sqrt(max(res2[i], 0.0) / max(yy, 1e-300)))}


def fit_sinograms(y: np.ndarray, m: np.ndarray, declared: tuple[str, int], poisson: bool = True) -> dict:
    """Fit stored sinograms y [K, R, A] to the projector-convention model m [K, R, A].  ``poisson``: y may be
    counts (then compared with Poisson noise when its values are non-negative integers)."""
    half = y.shape[-1] // 2  # angle offsets searched: −A/2 < k ≤ A/2
    per_flip = {o: _best_offset(y, orient(m, o, 0), half) for o in ORIENTATIONS}
    o_best = min(per_flip, key=lambda o: per_flip[o]["residual"])
    k_best = per_flip[o_best]["angle_offset"]
    t = orient(m, o_best, k_best)
    c, res = _lsq(y, t)
    per_sample = [_lsq(y[i], t[i])[0] for i in range(len(y))]
    spacing = {f: _lsq(y, _radial_resample(t, f))[1] for f in SPACING_FACTORS}
    f_best = min(spacing, key=spacing.get)
    out = {
        "calibration": {"c": c, "per_sample_min": float(np.min(per_sample)), "per_sample_max": float(np.max(per_sample)),
                        "per_sample_std": float(np.std(per_sample))},
        "orientation": {"best": o_best, "angle_offset": int(k_best), "declared": declared[0],
                        "declared_angle_offset": declared[1], "candidates": per_flip,
                        "residual_at_declared": _lsq(y, orient(m, *declared))[1]},
        "radial_spacing": {"best_factor": f_best, "residual_at_declared": spacing[1.0],
                           "residual_at_best": spacing[f_best], "residuals": {str(f): r for f, r in spacing.items()}},
        "residual": {"relative": res},
    }
    if poisson and np.all(y >= 0) and np.allclose(y, np.round(y), atol=1e-4):  # counts: compare with the noise
        noise = float(np.sqrt(max(c, 0) * t.clip(min=0).sum()) / max(np.linalg.norm(y), 1e-30))
        out["residual"].update(poisson=noise, ratio_to_noise=res / max(noise, 1e-30), counts=True)
    else:
        out["residual"]["counts"] = False
    return out


def _errors(kind: str, path, fit: dict) -> list[str]:
    errs = []
    o = fit["orientation"]
    found, declared = (o["best"], o["angle_offset"]), (o["declared"], o["declared_angle_offset"])
    if found != declared and o["residual_at_declared"] > ORIENTATION_GAIN * fit["residual"]["relative"]:
        errs.append(f"{path}: sinograms fit the forward model best with orientation {found[0]!r}, angle offset "
                    f"{found[1]} bins (residual {fit['residual']['relative']:.3f}), but dataset.json declares "
                    f"{declared[0]!r}, {declared[1]} (residual {o['residual_at_declared']:.3f}); set geometry."
                    f"orientation = {found[0]!r} and geometry.angle_offset = {found[1]} in dataset.json")
    s = fit["radial_spacing"]
    if s["best_factor"] != 1.0 and s["residual_at_best"] < SPACING_GAIN * s["residual_at_declared"]:
        errs.append(f"{path}: a radial bin size {s['best_factor']:g}× geometry.radial_mm fits markedly better "
                    f"(residual {s['residual_at_best']:.3f} vs {s['residual_at_declared']:.3f}); check "
                    f"geometry.radial_mm in dataset.json")
    r = fit["residual"]
    if r.get("counts") and r["ratio_to_noise"] > NOISE_RATIO_MAX:
        errs.append(f"{path}: residual {r['relative']:.3f} is {r['ratio_to_noise']:.1f}× what Poisson noise gives "
                    f"({r['poisson']:.3f}); the {kind} sinograms do not follow the forward model")
    elif not r.get("counts") and r["relative"] > RESIDUAL_MAX:
        errs.append(f"{path}: relative residual {r['relative']:.3f} against the forward model (> {RESIDUAL_MAX}); "
                    f"the {kind} sinograms do not follow it")
    return errs


ATTEN_UNITS_TOLERANCE = 0.05  # attenSino read (÷ atten_calibration) must be P attenMap within 5 %


def _atten_units(data, split: str, fit: dict) -> list[str]:
    """attenSino on file in other units (per mm, a scanner's scaled integers, …): read ÷ atten_calibration, it
    must be the line integrals P attenMap; the factor that makes it so is named for dataset.json."""
    k = fit["calibration"]["c"]
    if abs(k - 1) <= ATTEN_UNITS_TOLERANCE:
        return []
    total = k * data.atten_calibration
    return [f"{data.path(split, 'attenSino')}: the attenuation sinograms are {total:.4g}× the line integrals of "
            f"attenMap (P attenMap, μ in 1/cm), {'declared' if data.atten_calibration != 1 else 'expected'} "
            f"{data.atten_calibration:g}; set atten_calibration = {total:.4g} in dataset.json (they are divided by "
            f"it on read)"]


def offset_notes(path, fit: dict) -> list[str]:
    """An angle offset that fits better than the declared one, but by less than ORIENTATION_GAIN: not an
    error (another projector's own mismatch favours a neighbouring bin by a few per cent, and at 1° bins
    a real 1-bin offset changes the residual by less than 1 %), but never called clean silently."""
    o = fit["orientation"]
    if (o["best"], o["angle_offset"]) == (o["declared"], o["declared_angle_offset"]):
        return []
    gain = o["residual_at_declared"] / max(fit["residual"]["relative"], 1e-30) - 1
    return [f"{path}: angle offset {o['angle_offset']} fits {100 * gain:.1f} % better than the declared "
            f"{o['declared_angle_offset']} (below the {100 * (ORIENTATION_GAIN - 1):.0f} % that is refused); if your "
            f"angles start elsewhere, declare geometry.angle_offset in dataset.json"]


@torch.no_grad()
def check_forward_model(data, splits=None, samples: int = 8, projector=None) -> dict:
    """Fit every split's spread sample; returns ``{split: {"actSino": fit, "attenSino": fit?}, "errors": [...]}``."""
    from shared.physics.acquisition import Acquisition
    from shared.physics.projector import Projector

    physics = Acquisition(projector or Projector(data.geometry))  # c = 1: the fit finds c
    declared = (data.orientation, data.angle_offset)
    report = {"samples_per_split": samples, "splits": {}, "errors": []}
    for split in splits or data.splits:
        arrays = data.split(split)
        rows = _sample_rows(arrays.n, samples)
        centre = arrays.actSino.shape[1] // 2
        y = np.stack([np.asarray(stored(arrays.actSino)[i, centre], dtype=np.float64) for i in rows])
        mu = np.stack([np.asarray(arrays.attenMap[i], dtype=np.float32) for i in rows])
        act = np.stack([np.asarray(arrays.actMap[i], dtype=np.float32) for i in rows])
        for name, arr in (("actSino", y), ("attenMap", mu), ("actMap", act)):
            bad = [r for r, a in zip(rows, arr) if not np.isfinite(a).all()]
            if bad:
                raise DataError(f"{data.path(split, name)}: row {bad[0]} contains NaN/Inf")
        for name, arr in (("actSino", y), ("actMap", act)):
            zero = [r for r, a in zip(rows, arr) if not np.any(a)]
            if zero:
                raise DataError(f"{data.path(split, name)}: row {zero[0]} is all zero; the forward model cannot be "
                                f"fitted (is this the right file?)")
        ax, atten = physics.project(torch.from_numpy(act).double(), torch.from_numpy(mu).double())
        model = physics.expected_from(ax, atten)[:, 0].numpy()
        entry = {"rows": rows, "actSino": fit_sinograms(y, model, declared)}
        report["errors"] += _errors("activity", data.path(split, "actSino"), entry["actSino"])
        if arrays.attenSino is not None:
            ya = np.stack([np.asarray(stored(arrays.attenSino)[i, 0], dtype=np.float64) for i in rows])
            entry["attenSino"] = fit_sinograms(ya, atten[:, 0].numpy(), declared, poisson=False)  # line integrals
            report["errors"] += _errors("attenuation", data.path(split, "attenSino"), entry["attenSino"])
            report["errors"] += _atten_units(data, split, entry["attenSino"])
        report["splits"][split] = entry
    cs = [s["actSino"]["calibration"]["c"] for s in report["splits"].values()]
    report["calibration"] = {"c": float(np.mean(cs)), "declared": data.calibration,
                             "per_split": {k: v["actSino"]["calibration"]["c"] for k, v in report["splits"].items()}}
    return report


def calibration_of(data, split: str = "val", samples: int = 8) -> tuple[float, str]:
    """The dataset's count scale c: declared in dataset.json, else fitted on ``split``; and where it came from."""
    if data.calibration is not None:
        return float(data.calibration), "declared in dataset.json"
    c = check_forward_model(data, splits=[split], samples=samples)["calibration"]["c"]
    return c, f"fitted on {samples} {split} samples"


QUICK_SAMPLES = 2


def quick_check(data, log=print) -> dict:
    """The check every command that trains, exports or evaluates runs first: every row of every split
    against the forward model (``row_check``: mirrored rows, rows or splits in other units, μ units, a
    wrong declared calibration; cached per dataset version) and a full fit of a couple of rows of each
    split (orientation, angle offset, radial spacing, noise). A failure stops the command with one line
    naming the file, the rows and the fix (``frozenflow check-data`` gives the full report)."""
    from .row_check import require_every_row

    rows = require_every_row(data, log=log)  # units first: μ in 1/mm would otherwise read as a bad fit
    report = check_forward_model(data, samples=QUICK_SAMPLES)  # a whole split's orientation, with its fix
    if report["errors"]:
        raise DataError(report["errors"][0] + "; see `frozenflow check-data`")
    split = "train" if "train" in data.splits else data.splits[0]
    fit = report["splits"][split]["actSino"]
    n = sum(s["rows"] for s in rows["splits"].values())
    log(f"[data] forward model holds on all {n} rows of {', '.join(data.splits)}: c = {rows.get('c', float('nan')):.4g}; "
        f"orientation {fit['orientation']['best']}, offset {fit['orientation']['angle_offset']}, residual "
        f"{fit['residual']['relative']:.3f} on {QUICK_SAMPLES} rows per split")
    report["every_row"] = rows
    return report
