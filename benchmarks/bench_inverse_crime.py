"""What the inverse crime hid: FBP/MLEM on noiseless data from the reconstruction model vs the fine acquisition.

    python -m benchmarks.bench_inverse_crime [--samples 16] [--iters 10,30,100]

The same phantoms (``shared.data.synthetic`` parameters, default 180² geometry) give two expected
sinograms without noise: (a) ``exp(−P μ)·P act`` from the dataset's (block-averaged) maps with the
reconstruction projector P — what the generator did before it simulated on a finer grid — and
(b) the fine-grid Siddon acquisition binned down (what it does now).  FBP and MLEM reconstruct
both with P; NRMSE against actMap (whole image).  Without noise, the difference between the rows
is the system-model error the old data hid from the baselines.  Results:
benchmarks/results/inverse_crime.json.
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from benchmarks.common import environment, print_table, write_results
from shared.physics.acquisition import Acquisition, FineAcquisition
from shared.data.synthetic import PIXEL_KEYS, _render, _sample_params, fit_radius_px
from shared.physics.projector import ParallelGeometry
from shared.physics.recon import fbp, mlem


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--iters", default="10,30,100")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    g = ParallelGeometry(180, 3.0, 180, 180)
    acq = FineAcquisition(g, 2)
    P = Acquisition.of(g)
    rng = np.random.default_rng(a.seed)
    p = _sample_params(rng, a.samples, fit_radius_px(g), g.pixel_mm)
    p.update({k: p[k] * acq.k for k in PIXEL_KEYS})
    sigma = 5.0 / (2 * math.sqrt(2 * math.log(2))) / acq.fine.pixel_mm
    mu_f, act_f = _render(p, acq.fine.image_size, acq.fine.pixel_mm, 0, sigma, g.pixel_mm)
    mu_f, act_f = mu_f[:, None], act_f[:, None]
    lam_fine, _ = acq.acquire(mu_f, act_f)
    mu, act = acq.bin_image(mu_f), acq.bin_image(act_f)
    with torch.no_grad():
        lam_crime = P.expected(act, mu)

    def nrmse(x):
        return float(((x - act).flatten(1).norm(dim=1) / act.flatten(1).norm(dim=1)).mean())

    rows = []
    for name, lam in (("inverse crime: data from P on the coarse maps", lam_crime),
                      ("fine-grid Siddon acquisition, binned (shipped)", lam_fine)):
        row = {"data": name, "fbp": nrmse(fbp(lam, mu, P))}
        for n in (int(x) for x in a.iters.split(",")):
            row[f"mlem_{n}"] = nrmse(mlem(lam, mu, P, n_iter=n))
        rows.append(row)
    model_gap = float(((lam_fine - lam_crime).flatten(1).norm(dim=1) / lam_crime.flatten(1).norm(dim=1)).mean())
    print_table(rows, title=f"noiseless NRMSE vs actMap, {a.samples} phantoms, 180² (model gap |λ_fine − λ_P| / "
                            f"|λ_P| = {model_gap:.4f})")
    path = write_results("inverse_crime", {"samples": a.samples, "model_gap": model_gap, "rows": rows},
                         environment())
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
