"""Print what a demo (or headline) run produced: data, projector, both Generators, and each stage's metrics."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from shared.files.checkpoint import load
from shared.evaluation.metrics import HIGHER_IS_BETTER
from shared.data.dataset_io import open_dataset
from shared.models import load_spec
from shared.models.network import build
from shared.physics.projector import Projector
from shared.evaluation.tables import markdown_table, paired_lines


def describe_generators(root: Path) -> list[str]:
    """The built-in Generators the run trained (teacher/best.pt, student/student.pt), built from their own
    checkpoints' configs: parameters and tap shapes."""
    lines = []
    for task, direction, path in (("teacher", "IS", root / "teacher" / "best.pt"),
                                  ("student", "SI", root / "student" / "student.pt")):
        if not path.exists():
            continue
        ck = load(path)
        if (ck.get("meta", {}).get("model") or {}).get("source", "builtin") != "builtin":
            continue  # a user's class: describe_own_models
        g = build(load_spec("builtin"), ck["config"], direction)
        taps = ", ".join(f"{k} {c}x{h}x{w}" for k, (c, h, w) in g.tap_shapes.items())
        lines.append(f"  {task} Generator({direction}) of {path.relative_to(root)}: {g.parameter_count():,} "
                     f"parameters; taps {taps}")
    return lines


def describe_own_models(root: Path) -> list[str]:
    """Runs whose network is a user's class (a spec other than builtin): the class and its size."""
    lines = []
    for path in sorted(root.glob("*/student.pt")) + sorted(root.glob("*/best.pt")):
        model = load(path).get("meta", {}).get("model") or {}
        if model and model.get("source") != "builtin":
            lines.append(f"  {path.parent.name}: {model['factory'].rsplit('/', 1)[-1]} ({model['source']}): "
                         f"{model['parameters']:,} parameters")
    return sorted(set(lines))


def describe_projector(data) -> list[str]:
    t0 = time.time()
    P = Projector(data.geometry)
    built = time.time() - t0
    mu = torch.from_numpy(data.split("val").attenMap[:8].copy())
    t0 = time.time()
    sino = P.forward(mu)
    dt = time.time() - t0
    g = data.geometry
    return [f"  projector: {g.image_size}² image, {g.pixel_mm} mm pixels, {g.n_radial} radial x {g.n_angles} angles; "
            f"matrix ready in {built:.2f} s; 8 μ-maps projected in {dt * 1000:.0f} ms; max ∫μ = {sino.max():.2f}"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--demo", required=True, help="output folder of scripts/demo.sh or scripts/headline.sh (runs/demo)")
    args = p.parse_args(argv)
    root = Path(args.demo)
    data = open_dataset(root / "data")
    print("\n== summary")
    print(f"  data: {data}")
    for line in describe_projector(data) + describe_generators(root) + describe_own_models(root):
        print(line)
    teacher = root / "teacher" / "best.pt"
    if teacher.exists():
        m = load(teacher, kind="teacher")["metrics"]
        print(f"  teacher (best epoch {m['epoch']}): val SSIM {m['val_ssim']:.3f}, global SSIM {m['val_ssim_global']:.3f}, "
              f"PSNR {m['val_psnr']:.1f} dB, relative L2 {m['val_nrmse']:.3f}")
    table = test_table(root)
    if table:
        print("\n== test metrics (mean over the test split; higher PSNR/SSIM and lower NRMSE are better)")
        print(table)
    lesions = lesion_table(root)
    if lesions:
        print("\n== lesions: contrast recovery (1 = true contrast) and background variability, mean [95 % CI]")
        print(lesions)
    for path in sorted(root.glob("evaluation*/summary.json")):
        pairs = paired_lines(json.loads(path.read_text()))
        if pairs:
            print(f"\n== paired differences, {path.parent.name} (student = injected; mean [95 % CI], paired t and Wilcoxon)")
            print("\n".join(pairs))
    ablation = root / "ablation" / "ablation.md"
    if ablation.exists():
        print(f"\n== ablation (mean ± std over seeds): {ablation}")
        print(ablation.read_text().strip())


def test_table(root: Path) -> str:
    """Markdown table of the demo's evaluations: students with and without injection, FBP, MLEM."""
    rows = {}
    for folder, rename in (("evaluation", {"student": "student (injection)", "plain": "student (no injection)"}),
                           ("evaluation_plain", {"student": "student (no injection)"}),  # older demos
                           ("evaluation_own", {"student": "own Generator (injection)"}),
                           ("evaluation_mixer", {"student": "student (mixer, feature dropout)"})):
        path = root / folder / "summary.json"
        if path.exists():
            for method, vals in json.loads(path.read_text())["methods"].items():
                if folder in ("evaluation", "evaluation_plain") or method in rename:  # the others' baselines are
                    # the main evaluation's
                    rows[rename.get(method, method)] = vals
    if not rows:
        return ""
    columns = {"psnr": "PSNR (dB)", "ssim": "SSIM", "ssim_global": "global SSIM", "nrmse": "NRMSE",
               "masked_ssim": "SSIM (body)", "masked_nrmse": "NRMSE (body)"}
    metrics = [k for k in columns if all(k in v for v in rows.values())]
    order = sorted(rows, key=lambda n: (n in ("fbp", "mlem"), not n.startswith("student"), n))  # networks first
    table = markdown_table(["method", *(columns[k] for k in metrics)],
                           [[name, *(rows[name][k] for k in metrics)] for name in order])
    wins = {k: (max if HIGHER_IS_BETTER[k.replace("masked_", "")] else min)(order, key=lambda n: rows[n][k])
            for k in metrics}
    return table + "\nbest per metric: " + "; ".join(f"{columns[k]}: {wins[k]}" for k in metrics)

def lesion_table(root: Path) -> str:
    """CRC (hot, cold) and BV per method from the demo's evaluation, when its data know their lesions."""
    from shared.evaluation.lesions import format_lesions

    path = root / "evaluation" / "summary.json"
    lesions = json.loads(path.read_text()).get("lesions") if path.exists() else None
    return format_lesions(lesions) if lesions and lesions.get("statistics") else ""


if __name__ == "__main__":
    main()
