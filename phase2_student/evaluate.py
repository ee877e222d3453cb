"""Evaluate a student against FBP and MLEM on one split.

``frozenflow evaluate --student student.pt --features STORE --data DIR --split test --out DIR``
writes OUT/per_sample.csv (sample, method, mse, psnr, ssim, ssim_global, nrmse and the same inside the
body, μ > 0, as masked_*), OUT/summary.json ({"split", "methods": {method: {metric: mean}},
"statistics": {method: {metric: {mean, std, ci95, n}}}, "calibration": {c, source}}) and
"paired": {"student - plain" | "student - mlem": {metric: {mean_diff, ci95, p_t, p_wilcoxon}}}),
OUT/comparison.png (target | FBP | MLEM | plain | student on one colour scale, their errors centred
on zero, a line profile through a lesion) and OUT/box_plots.png.  All images are compared in the activity map's physical units.
A dataset that ships its own reconstructions (``{split}-recon1.npy`` / ``recon2``, e.g. the vendor's OSEM,
named in dataset.json ``names``) adds them as methods with the same metrics, statistics, paired tests
(student − recon1 …) and figures; ``summary["method_names"]`` holds their display names.
With a dataset that knows its lesions (``lesionMap``, the synthetic data) also contrast recovery per
lesion and background variability (shared.evaluation.lesions): OUT/per_lesion.csv, OUT/crc_vs_size.png
and summary["lesions"] ({"n", "statistics": {method: {crc_hot, crc_cold, bv}}, "paired"}).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from feature_store import StoreError, open_store
from shared.files.atomic import atomic_write_csv, atomic_write_json
from shared.cli import new_parser, run_main
from shared.data.batch import collate
from shared.data.dataset_io import RECON_KINDS, as_dataset, open_dataset
from shared.data.forward_check import quick_check
from shared.device import DEVICE_HELP, resolve_device
from shared.evaluation.lesions import format_lesions
from shared.evaluation.metrics import METRICS, masked_metrics
from shared.files.outputs import claim
from shared.evaluation.tables import markdown_table, paired_lines

from .task import load_student, student_datasets
from shared.errors import InputError

METHODS = ("student", "fbp", "mlem")  # and the dataset's own reconstructions when it has them (recon1, recon2)


@torch.no_grad()
def predict(student, data, split: str, store_path=None, batch_size: int = 16, device="cpu") -> np.ndarray:
    """Student reconstructions (N,1,H,W) in actMap units."""
    meta = student.meta
    store = None
    if student.plan:
        if not store_path:
            raise StoreError(f"this student injects {sorted(set(student.plan.values()))}; pass --features STORE")
        store = open_store(store_path)
        if store.teacher_sha256 != meta["teacher_sha256"]:
            raise StoreError(f"{store_path}: made by teacher {str(store.teacher_sha256)[:12]}…, but "
                             f"{student.path} was trained with features of teacher "
                             f"{str(meta['teacher_sha256'])[:12]}…; pass the store it was trained with")
        if store.fingerprint != meta["store_fingerprint"]:
            raise StoreError(f"{store_path}: not the feature store this student was trained with (store fingerprint "
                             f"{store.fingerprint[:12]}…, student expects {meta['store_fingerprint'][:12]}…)")
    if meta.get("data_fingerprint") not in (None, data.fingerprint()):
        print(f"[evaluate] note: {data.root} differs from the student's training dataset (fingerprint); "
              f"evaluating anyway")
    (ds,) = student_datasets(student.run, data, store, splits=(split,), teacher_sha256=meta.get("teacher_sha256"))
    out = []
    for batch in DataLoader(ds, batch_size=batch_size, collate_fn=collate):
        feats = {t: f.to(device) for t, f in batch.get("features", {}).items()}
        out.append(student(batch["sino"].to(device), feats or None).cpu())
    pred = torch.cat(out).numpy() / float(meta.get("output_scale", 1.0))
    if student.run.normalized_scale is not None:
        # their normalize: the network learned each image's shape, L1-normalised; its total is the truth's
        truth = np.abs(np.asarray(data.split(split).actMap, dtype=np.float64)).reshape(len(pred), -1).sum(1)
        total = np.abs(pred.astype(np.float64)).reshape(len(pred), -1).sum(1)
        pred = (pred * (truth / np.maximum(total, 1e-30)).reshape(-1, 1, 1, 1)).astype(np.float32)
        print(f"[evaluate] {student.path}: trained with SI_normalize (shape only); each reconstruction is scaled "
              f"to its true image's total activity before the metrics")
    return pred


def per_sample_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Whole-image metrics, and with ``mask`` (the body, μ > 0) the same inside it as ``masked_*``."""
    p, t = torch.from_numpy(pred).double(), torch.from_numpy(target).double()
    out = {name: fn(p, t).numpy() for name, fn in METRICS.items()}
    if mask is not None:
        out.update({k: v.numpy() for k, v in masked_metrics(p, t, torch.from_numpy(mask)).items()})
    return out


def statistics(values: np.ndarray) -> dict:
    """Mean, sample std and the 95 % confidence interval of the mean (Student t, n − 1 dof)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    n, mean = len(v), float(v.mean())
    std = float(v.std(ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.975, n - 1) * std / np.sqrt(n)) if n > 1 else float("nan")
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": n}


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    """Paired comparison of two methods on the same samples: mean difference a − b with its 95 % CI,
    the paired t-test and the Wilcoxon signed-rank test (two-sided p-values)."""
    from scipy import stats

    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    out = {"mean_diff": float(d.mean()), "ci95": statistics(d)["ci95"], "n": len(d)}
    nonzero = np.any(d != 0)
    out["p_t"] = float(stats.ttest_rel(a, b).pvalue) if len(d) > 1 and nonzero else 1.0
    out["p_wilcoxon"] = float(stats.wilcoxon(d).pvalue) if len(d) > 1 and nonzero else 1.0
    return out


def baseline_recons(data, split: str, methods, tuned_on: str | None = "val", out: Path | None = None,
                    calibration: tuple[float, str] | None = None, device="cpu") -> dict:
    """FBP/MLEM reconstructions of ``split`` in actMap units; their settings are tuned on ``tuned_on`` (the
    validation split, as the student's are) by mean relative L2, or the module defaults when ``tuned_on``
    is None.  The sinograms are divided by the dataset's calibration (declared, else fitted)."""
    from shared.data.forward_check import calibration_of
    from shared.evaluation.baselines import BASELINES, reconstruct_split, tune_baselines

    c, source = calibration or calibration_of(data, tuned_on or split)
    print(f"[evaluate] calibration c = {c:.4g} ({source}): baselines reconstruct actSino / c")
    settings = {}
    if tuned_on:
        print(f"[evaluate] tuning FBP filter/cutoff and MLEM iterations/post-filter on the {tuned_on} split")
        best = tune_baselines(data, tuned_on, subsets=(1,), max_iter={1: 60}, calibration=c, device=device)["best"]
        settings = {m: best[m] for m in methods}
    recons = {}
    for m in methods:
        print(f"[evaluate] {m} on {split} ({data.split(split).n} samples) {settings.get(m) or BASELINES[m].keywords}")
        recons[m] = reconstruct_split(data, split, m, calibration=c, device=device, **settings.get(m, {}))
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(out) / "baseline_settings.json",
                          {**{m: settings.get(m) or BASELINES[m].keywords for m in methods},
                           "calibration": {"c": c, "source": source}}, indent=1, default=str)
    return recons


def evaluate(student_path, data_dir, split, out, store_path=None, device="auto", methods=None,
             baseline_split: str | None = "val", plain_path=None, overwrite: bool = False) -> dict:
    """Every method on ``split``; ``plain_path`` adds a second (plain, feature-free) student as
    ``plain`` and the paired comparisons student − plain and student − MLEM. ``out`` follows the output
    rule (``shared.files.outputs``), claimed once the students and the store have passed their checks."""
    out = Path(out)
    data = as_dataset(data_dir)
    methods = (*METHODS, *data.recons) if methods is None else methods
    device = resolve_device(device)
    student = load_student(student_path, device)
    if store_path and "student" in methods and not student.plan:
        raise InputError(f"--features: {student_path} injects no features (a plain student); drop --features")
    target = np.array(data.split(split).actMap, dtype=np.float32)
    body = np.array(data.split(split).attenMap) > 0  # where the patient is
    recons = {}
    if "student" in methods:  # first: a wrong store fails before minutes of MLEM
        recons["student"] = predict(student, data, split, store_path, device=device)
    if plain_path:
        plain = load_student(plain_path, device)
        if plain.plan:
            raise InputError(f"--plain: {plain_path} injects features; give the plain (no injection) student")
        recons["plain"] = predict(plain, data, split, None, device=device)
    claim(out, "evaluation", overwrite=overwrite)  # the user's own files there are never replaced
    for k in data.recons:  # the data's own reconstructions (e.g. the vendor's OSEM), in actMap units
        if k in methods:
            recons[k] = np.array(getattr(data.split(split), k), dtype=np.float32)
    classical = [m for m in ("fbp", "mlem") if m in methods]
    calibration = None
    if classical:
        from shared.data.forward_check import calibration_of

        calibration = calibration_of(data, baseline_split or split)
        recons.update(baseline_recons(data, split, classical, tuned_on=baseline_split, out=out,
                                      calibration=calibration, device=device))
    out.mkdir(parents=True, exist_ok=True)
    rows, means, stats, per = [], {}, {}, {}
    for m, rec in recons.items():
        vals = per[m] = per_sample_metrics(rec, target, body)
        means[m] = {k: float(np.mean(v)) for k, v in vals.items()}
        stats[m] = {k: statistics(v) for k, v in vals.items()}
        rows += [{"sample": i, "method": m, **{k: float(v[i]) for k, v in vals.items()}} for i in range(len(target))]
    atomic_write_csv(out / "per_sample.csv", rows)
    pairs = {f"{a} - {b}": {k: paired(per[a][k], per[b][k]) for k in per[a]}
             for a, b in compared_pairs(per)}
    names = {m: data.recons.get(m, m) for m in recons}
    summary = {"split": split, "methods": means, "statistics": stats, "paired": pairs, "method_names": names,
               "calibration": {"c": calibration[0], "source": calibration[1]} if calibration else None}
    if data.has_lesions:
        summary["lesions"] = lesion_summary(recons, target, np.array(data.split(split).lesionMap), body,
                                            data.geometry.pixel_mm, out)
    atomic_write_json(out / "summary.json", summary)
    from shared.evaluation.plots import box_plots, comparison_figure

    order = ("fbp", "mlem", *data.recons, "plain", "student")
    ordered = {names[m]: recons[m] for m in order if m in recons}
    comparison_figure(target, ordered, out / "comparison.png", {names[m]: per[m]["nrmse"] for m in order if m in per},
                      lesions=np.array(data.split(split).lesionMap) if data.has_lesions else None)
    box_plots([{**r, "method": names[r["method"]]} for r in rows], ["nrmse", "masked_nrmse", "psnr", "masked_ssim"],
              out / "box_plots.png")
    return summary


def compared_pairs(per: dict) -> list[tuple[str, str]]:
    """The paired comparisons of the student: with the plain student, MLEM and the data's own reconstructions."""
    return [("student", b) for b in ("plain", "mlem", *RECON_KINDS) if "student" in per and b in per]


def lesion_summary(recons: dict, target, labels, body, pixel_mm: float, out: Path) -> dict:
    """CRC per lesion and BV (shared.evaluation.lesions): OUT/per_lesion.csv, OUT/crc_vs_size.png, and
    {"n": {hot, cold}, "statistics": {method: {crc_hot, crc_cold, bv}}, "paired": {…}} over lesions."""
    from shared.evaluation.lesions import by_method, lesion_metrics
    from shared.evaluation.plots import crc_figure

    rows = lesion_metrics(recons, target, labels, body, pixel_mm)
    if not rows:
        return {"n": {"hot": 0, "cold": 0}}
    atomic_write_csv(out / "per_lesion.csv", rows)
    per = by_method(rows, recons)
    stats = {m: {k: statistics(v) for k, v in vals.items() if len(v)} for m, vals in per.items()}
    pairs = {f"{a} - {b}": {k: paired(per[a][k], per[b][k]) for k in per[a] if len(per[a][k])}
             for a, b in compared_pairs(per)}
    crc_figure(rows, list(recons), out / "crc_vs_size.png")
    return {"n": {k: sum(r["kind"] == k for r in rows) for k in ("hot", "cold")}, "statistics": stats, "paired": pairs}


def format_table(summary: dict, metrics=("psnr", "ssim", "ssim_global", "nrmse")) -> str:
    names = summary.get("method_names", {})
    return markdown_table(["method", *metrics],
                          [[names.get(m, m), *(vals[k] for k in metrics)] for m, vals in summary["methods"].items()])


def parser():
    p = new_parser("frozenflow evaluate", __doc__)
    p.add_argument("--student", required=True, help="trained student checkpoint (student.pt)")
    p.add_argument("--features", help="feature store the student was trained with (needed when it injects)")
    p.add_argument("--plain", help="a plain (no injection) student.pt to compare with, paired sample by sample")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--split", default="test", help="split to evaluate")
    p.add_argument("--out", required=True, help="output folder: new or empty, or an evaluation (replaced with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace the evaluation in --out")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--methods", help=f"comma list of methods to evaluate (default: {','.join(METHODS)} and the "
                                     f"dataset's recon1/recon2 when it has them)")
    p.add_argument("--baseline-defaults", action="store_true",
                   help="use the built-in FBP/MLEM settings instead of tuning them on the val split")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    data = open_dataset(args.data)
    known = [*METHODS, *data.recons]
    methods = known if args.methods is None else [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in known]
    if bad or not methods:
        missing = [m for m in bad if m in ("recon1", "recon2")]
        hint = f" ({data.root} has no {missing[0]} files)" if missing else ""
        raise InputError(f"--methods must be a comma list drawn from {known}, got {args.methods!r}{hint}")
    quick_check(data)
    summary = evaluate(args.student, data, args.split, args.out, args.features, args.device, methods,
                       baseline_split=None if args.baseline_defaults else "val", plain_path=args.plain,
                       overwrite=args.overwrite)
    print(format_table(summary))
    lesions = summary.get("lesions", {}).get("statistics")
    if lesions:
        print(format_lesions(summary["lesions"]))
    for line in paired_lines(summary):
        print(f"[evaluate] {line}")
    print(f"[evaluate] -> {Path(args.out) / 'summary.json'}, per_sample.csv, comparison.png, box_plots.png"
          + (", per_lesion.csv, crc_vs_size.png" if lesions else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
