"""Training memory of the tuned teacher and student at full size (S = 288, 180² images) for batches
32–256: an estimate made on the CPU, for GPUs this project has not run on.

    python -m benchmarks.bench_memory            # → benchmarks/results/gpu_memory.json (+ a table)

How: two measurements of one training step (forward + backward), each at two batch sizes and
extrapolated along the line through them (memory grows linearly with the batch).
(1) ``saved``: a ``saved_tensors_hooks`` counter adds up the bytes autograd keeps for the backward
pass (each storage once), at batches 2 and 4, plus the batch's inputs, targets and (student)
teacher features and weights + gradients + Adam's two moments (4 × the parameter bytes); fp32 and
bf16 autocast.  (2) ``cpu_peak``: the growth of a fresh process's peak RSS over the step at
batches 8 and 32 (fp32), which also holds the transient buffers of the backward pass.  The verdict
takes the larger, with a 25 % margin for what neither sees on a GPU: the caching allocator's
fragmentation, cuDNN workspaces and the CUDA context (~0.3–1 GB).  ``scripts/gpu_check.sh`` measures the
real peak with ``torch.cuda.max_memory_allocated`` on a CUDA machine.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

from benchmarks.common import environment, print_table, write_results
from shared.device import autocast

GiB = 2 ** 30
BATCHES = (32, 64, 128, 256)
GPU_BYTES, MARGIN = 24 * 10 ** 9, 1.25


def _models():
    from phase2_student.injection import build_student
    from shared.config.construct_dictionaries import load_config
    from shared.models import load_spec
    from shared.models.network import build

    teacher = build(load_spec("builtin"), load_config("teacher"), "IS")
    shapes = teacher.tap_shapes
    student = build_student(load_config("student"), load_spec("builtin"), shapes)  # tuned, all levels, crosswise
    return teacher, student, shapes


def _step_bytes(model, make_batch, batch: int, amp: torch.dtype | None) -> int:
    """Bytes autograd saves for backward in one training step of ``batch`` samples."""
    seen, total = set(), [0]

    def pack(t):
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total[0] += t.untyped_storage().nbytes()
        return t

    x, extra = make_batch(batch)
    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            autocast("cpu", amp):
        out = model(x, **extra)
    out.float().square().mean().backward()
    return total[0]


def estimate(batches=BATCHES) -> list[dict]:
    teacher, student, shapes = _models()
    S, image = 288, 180
    feature_numel = sum(c * h * w for c, h, w in shapes.values())

    def teacher_batch(b):
        return torch.rand(b, 1, image, image), {}

    def student_batch(b):
        feats = {t: torch.rand(b, *shape) for t, shape in student.teacher_shapes.items()}
        return torch.rand(b, 1, S, S), {"features": feats}

    rows = []
    for key, name, model, make, io_numel in (
            ("teacher", "teacher (IS)", teacher, teacher_batch, image * image + 2 * S * S),  # μ, target, prediction
            ("student", "student (SI, 144/36/9)", student, student_batch, S * S + 2 * image * image + feature_numel)):
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        r8, r32 = _cpu_peak(key, 8), _cpu_peak(key, 32)
        cpu_line = lambda b: r8 + (r32 - r8) / 24 * (b - 8)  # noqa: E731
        for amp_name, amp in (("fp32", None), ("bf16", torch.bfloat16)):
            b1, b2 = 2, 4
            m1, m2 = _step_bytes(model, make, b1, amp), _step_bytes(model, make, b2, amp)
            per_sample = (m2 - m1) / (b2 - b1)
            fixed = m1 - per_sample * b1
            for b in batches:
                saved = fixed + per_sample * b + 4 * io_numel * b + 4 * params
                peak = cpu_line(b) if amp is None else None
                worst = max(saved, peak or 0)
                rows.append({"model": name, "precision": amp_name, "batch": b,
                             "saved_GiB": round(saved / GiB, 2),
                             "cpu_peak_GiB": round(peak / GiB, 2) if peak is not None else "",
                             "fits_24GB_with_margin": bool(worst * MARGIN <= GPU_BYTES)})
    return rows


def _cpu_peak(which: str, batch: int) -> float:
    """Peak-RSS growth (bytes) of one fp32 training step in a fresh process."""
    code = f"from benchmarks.bench_memory import _peak_child; _peak_child({which!r}, {batch})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["bytes"])


def _peak_child(which: str, batch: int) -> None:
    import gc
    import resource

    teacher, student, _ = _models()
    if which == "student":
        x, extra = torch.rand(batch, 1, 288, 288), {"features": {t: torch.rand(batch, *s)
                                                                  for t, s in student.teacher_shapes.items()}}
    else:
        x, extra = torch.rand(batch, 1, 180, 180), {}
    model = student if which == "student" else teacher
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model(x, **extra).square().mean().backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"bytes": (after - before) * 1024}))  # ru_maxrss is in KiB on Linux


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--name", default="gpu_memory", help="results file name under benchmarks/results")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    rows = estimate()
    print_table(rows, title="estimated training memory at S=288 (CPU estimate; see module docstring)")
    write_results(args.name, {"rows": rows, "method": __doc__.split("How: ")[1].split("\n\n")[0].replace("\n", " ")},
                  environment())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
