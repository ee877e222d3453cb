"""Cost of injection through hooks and side convolutions against the widened-concatenation path.

Both students are the tuned built-in Generator (S = 288) with all levels injected crosswise and the
same per-channel scales. The baseline is the pre-contract path, re-expressed here: each receiving
layer widened by the injected channels and the scaled features concatenated before it (one wider
convolution). The shipped path (``shared.models.Network``) keeps the receiving layer and adds a bias-free
side convolution's output by a forward hook. One training step = forward, MSE loss, backward, Adam.
Steps alternate between the two, so drift of a shared machine hits both; the figure is the ratio of
medians, quiet and while another process spins on one core.

    .venv/bin/python -m benchmarks.bench_injection [--batch 4] [--rounds 20]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn

from benchmarks.common import environment, write_results
from shared.config.schema import RunConfig
from phase2_student.injection import build_student
from shared.config.construct_dictionaries import load_config
from shared.config.schema import InjectionConfig
from shared.models.generator import N_SCALES, Generator
from shared.models import load_spec
from shared.models.network import build
from shared.models.side import NEGATIVE_SLOPE

# stage (module path) → the tap whose injected channels it takes; receiver = its first convolution
RECEIVING_STAGE = {"enc144": "encoder.1", "enc36": "encoder.3", "enc9": "neck", "dec9": "decoder.0",
                   "dec36": "decoder.2", "dec144": "decoder.4"}


class ConcatStudent(nn.Module):
    """The baseline: receivers widened, ``[x, s⊙f]`` concatenated before each receiving stage."""

    def __init__(self, config, shapes):
        super().__init__()
        self.g = Generator(config, "SI")
        self.plan = InjectionConfig.from_flat(config).plan
        spec = load_spec("builtin")
        modules = dict(self.g.named_modules())
        for s, t in self.plan.items():
            path = spec.receivers[s]
            old = modules[path]
            wide = (nn.ConvTranspose2d(old.in_channels + shapes[t][0], old.out_channels, old.kernel_size, old.stride,
                                       old.padding, output_padding=old.output_padding)
                    if isinstance(old, nn.ConvTranspose2d) else
                    nn.Conv2d(old.in_channels + shapes[t][0], old.out_channels, old.kernel_size, old.stride, old.padding))
            nn.init.kaiming_normal_(wide.weight, a=NEGATIVE_SLOPE, nonlinearity="leaky_relu")
            parent, name = path.rsplit(".", 1)
            setattr(modules[parent], name, wide)
        self.scales = nn.ParameterDict({s: nn.Parameter(torch.full((shapes[t][0], 1, 1), 0.1))
                                        for s, t in self.plan.items()})
        self.by_stage = {RECEIVING_STAGE[s]: s for s in self.plan}

    def _join(self, x, stage, feats):
        s = self.by_stage.get(stage)
        return x if s is None else torch.cat([x, feats[self.plan[s]] * self.scales[s]], dim=1)

    def forward(self, x, feats):
        g, skips = self.g, []
        for k, block in enumerate(g.encoder):
            x = block(self._join(x, f"encoder.{k}", feats))
            skips.append(x)
        x = g.neck(self._join(x, "neck", feats))
        for j, block in enumerate(g.decoder):
            if g.cfg.skip_mode == "add":
                x = x + skips[N_SCALES - 1 - j]
            elif g.cfg.skip_mode == "concat":
                x = torch.cat([x, skips[N_SCALES - 1 - j]], dim=1)
            x = block(self._join(x, f"decoder.{j}", feats))
        x = g.final_activation(x) * g.output_scale()
        o = (g.size - 180) // 2
        return x[..., o:o + 180, o:o + 180]


def _stepper(model, x, feats, target):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x, feats), target).backward()
        opt.step()
    return step


def measure(batch: int, rounds: int) -> dict:
    torch.manual_seed(0)
    config = load_config("student")
    teacher = build(load_spec("builtin"), load_config("teacher"), "IS")
    shapes = teacher.tap_shapes
    x = torch.randn(batch, 1, 288, 288)
    feats = {t: torch.randn(batch, *s) for t, s in shapes.items()}
    target = torch.rand(batch, 1, 180, 180)
    hooks = build_student(RunConfig.parse(config, "student"), load_spec("builtin"), shapes)
    concat = ConcatStudent(config, shapes)
    assert sum(p.numel() for p in hooks.parameters()) == sum(p.numel() for p in concat.parameters())
    steps = {"hooks": _stepper(hooks, x, feats, target), "concat": _stepper(concat, x, feats, target)}
    for fn in steps.values():  # warm-up
        fn(), fn()
    times = {k: [] for k in steps}
    for r in range(rounds):
        for name in (("hooks", "concat") if r % 2 else ("concat", "hooks")):
            t0 = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"batch": batch, "rounds": rounds, "ms_per_step": {k: round(v * 1e3, 2) for k, v in med.items()},
            "ratio_hooks_to_concat": round(med["hooks"] / med["concat"], 4),
            "parameters": sum(p.numel() for p in hooks.parameters())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8, help="the tuned student's batch size")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args(argv)
    threads = torch.get_num_threads()
    results = {"quiet": measure(args.batch, args.rounds)}
    print("quiet:", results["quiet"])
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # another process holds a core
    try:
        time.sleep(1)
        results["one_core_busy"] = measure(args.batch, args.rounds)
        print("one core busy:", results["one_core_busy"])
        torch.set_num_threads(1)  # what a trial sharing the machine runs with (--cpus-per-trial 1)
        results["one_core_busy_1_thread"] = measure(args.batch, args.rounds)
        print("one core busy, 1 torch thread:", results["one_core_busy_1_thread"])
    finally:
        hog.kill()
        torch.set_num_threads(threads)
    write_results("injection", results, environment(torch_threads=threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
