"""Forward-projection throughput: FrozenFlow's Projector vs skimage.transform.radon vs astra (CPU).

    python -m benchmarks.bench_projector [--batch 32] [--repeats 10]

Default geometry: 180×180 image, 3 mm pixels, 180 radial bins × 180 angles over [0°, 180°).
Reported (median of ``--repeats`` timed calls after ``--warmup`` untimed ones):

* ours: ``Projector.forward`` on a [B, 1, 180, 180] float32 batch, images/s (matrix build and
  cache load are timed separately and not included); also the adjoint, batch 1, and 1 torch thread;
* skimage: ``radon(image, theta, circle=False)`` one image at a time (the current method);
* astra-direct: astra's CPU 'linear' projector with the FP algorithm, one image at a time, data
  objects allocated once (the fastest way to call it); ``astra.create_sino`` is reported too.

skimage and astra's CPU projector are single-threaded; ours uses torch's threads (all cores by
default), so the "1 thread" row is the per-core comparison.  Writes benchmarks/results/<--name>.json.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from benchmarks.common import CpuMonitor, environment, print_table, time_call, write_results
from shared.physics.projector import ParallelGeometry, Projector

TARGET_VS_SKIMAGE = 30.0
TARGET_VS_ASTRA = 10.0


def _astra_fp(g: ParallelGeometry):
    """Per-image astra CPU forward projection with preallocated data objects; returns (project, cleanup)."""
    import astra

    vol = astra.create_vol_geom(g.image_size, g.image_size)
    pg = astra.create_proj_geom("parallel", g.radial_mm / g.pixel_mm, g.n_radial, g.angles_rad)
    pid = astra.create_projector("linear", pg, vol)
    vid = astra.data2d.create("-vol", vol, 0.0)
    sid = astra.data2d.create("-sino", pg, 0.0)
    cfg = astra.astra_dict("FP")
    cfg.update(ProjectorId=pid, ProjectionDataId=sid, VolumeDataId=vid)
    aid = astra.algorithm.create(cfg)
    scale = g.pixel_mm / 10.0

    def project(img: np.ndarray) -> np.ndarray:  # [N, N] → [R, A] in cm, like ours
        astra.data2d.store(vid, img)
        astra.algorithm.run(aid)
        return astra.data2d.get_shared(sid).T * scale

    def create_sino(img: np.ndarray) -> np.ndarray:
        sino_id, sino = astra.create_sino(img, pid)
        astra.data2d.delete(sino_id)
        return sino

    def cleanup():
        astra.algorithm.delete(aid)
        astra.data2d.delete([vid, sid])
        astra.projector.delete(pid)

    return project, create_sino, cleanup


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=180)
    ap.add_argument("--pixel-mm", type=float, default=3.0)
    ap.add_argument("--n-radial", type=int, default=180)
    ap.add_argument("--n-angles", type=int, default=180)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for 'ours' (default: torch's default)")
    ap.add_argument("--baseline-repeats", type=int, default=None,
                    help="timed single-image calls for skimage/astra (default: --repeats)")
    ap.add_argument("--cache-dir", default=None,
                    help="matrix cache for the build/load timing (default: a fresh temporary directory, "
                         "so the build is cold)")
    ap.add_argument("--name", default="projector", help="results file benchmarks/results/<name>.json")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    from skimage.transform import radon

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    g = ParallelGeometry(args.image_size, args.pixel_mm, args.n_radial, args.n_angles)
    base_repeats = args.baseline_repeats or args.repeats
    env0 = environment()

    # ---- matrix build (cold cache) and load (warm cache)
    with tempfile.TemporaryDirectory(prefix="ff_bench_projector_") as tmp:
        cache = args.cache_dir or tmp
        t0 = time.perf_counter()
        P = Projector(g, cache_dir=cache)
        first_s = time.perf_counter() - t0
        load = time_call(lambda: Projector(g, cache_dir=cache), repeats=3, warmup=0)
        P = Projector(g, cache_dir=cache)
    W = P.system_matrix()
    nnz = int(W.values().numel())

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 1, g.image_size, g.image_size, generator=gen)
    y = torch.rand(args.batch, 1, g.n_radial, g.n_angles, generator=gen)
    x1 = x[:1].contiguous()
    imgs = [x[i, 0].numpy().astype(np.float64) for i in range(min(4, args.batch))]
    theta_deg = np.rad2deg(g.angles_rad)

    rows, res = [], {}

    def record(key, label, timing, images_per_call, note=""):
        ips = timing.per_second(images_per_call)
        res[key] = {"images_per_s": ips, "ms_per_call": timing.median_s * 1e3, "images_per_call": images_per_call,
                    "timing": timing.to_dict(), "note": note}
        rows.append({"method": label, "images/call": images_per_call, "ms/call (median)": timing.median_s * 1e3,
                     "ms/call (min)": timing.min_s * 1e3, "images/s": ips, "note": note})
        return ips

    mon = CpuMonitor().start()  # how busy the machine was meanwhile
    with torch.inference_mode():
        ours = record("ours_forward", f"ours forward, batch {args.batch}",
                      time_call(lambda: P(x), args.repeats, args.warmup), args.batch, f"{threads} torch threads")
        record("ours_adjoint", f"ours adjoint, batch {args.batch}",
               time_call(lambda: P.adjoint(y), args.repeats, args.warmup), args.batch, f"{threads} torch threads")
        record("ours_forward_b1", "ours forward, batch 1",
               time_call(lambda: P(x1), args.repeats, args.warmup), 1, f"{threads} torch threads")
        torch.set_num_threads(1)
        try:
            ours_1t = record("ours_forward_1thread", f"ours forward, batch {args.batch}",
                             time_call(lambda: P(x), args.repeats, args.warmup), args.batch, "1 torch thread")
        finally:
            torch.set_num_threads(threads)

    k = iter(range(10 ** 9))
    sk = record("skimage_radon", "skimage radon (circle=False)",
                time_call(lambda: radon(imgs[next(k) % len(imgs)], theta=theta_deg, circle=False), base_repeats, 1),
                1, "per image, 1 thread")
    project, create_sino, cleanup = _astra_fp(g)
    try:
        ast = record("astra_fp", "astra CPU linear, FP algorithm",
                     time_call(lambda: project(imgs[next(k) % len(imgs)]), base_repeats, args.warmup),
                     1, "per image, data objects reused")
        ast_cs = record("astra_create_sino", "astra create_sino",
                        time_call(lambda: create_sino(imgs[next(k) % len(imgs)]), base_repeats, args.warmup),
                        1, "per image")
        # same computation? ours vs astra on one image (identical model → float32 rounding only)
        with torch.inference_mode():
            ours_img = P(torch.from_numpy(imgs[0]).float()[None, None])[0, 0].double().numpy()
        ref = project(imgs[0])
        same = float(np.linalg.norm(ours_img - ref) / np.linalg.norm(ref))
    finally:
        cleanup()
    astra_best = max(ast, ast_cs)
    mon.stop()

    ratios = {
        "ours_vs_skimage": ours / sk,
        "ours_vs_astra_direct": ours / astra_best,
        "ours_1thread_vs_skimage": ours_1t / sk,
        "ours_1thread_vs_astra_direct": ours_1t / astra_best,
    }
    targets = {
        "ours_vs_skimage": {"target": TARGET_VS_SKIMAGE, "met": ratios["ours_vs_skimage"] >= TARGET_VS_SKIMAGE},
        "ours_vs_astra_direct": {"target": TARGET_VS_ASTRA, "met": ratios["ours_vs_astra_direct"] >= TARGET_VS_ASTRA},
    }
    results = {
        "geometry": g.to_dict(),
        "batch": args.batch,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "baseline_repeats": base_repeats,
        "matrix": {"nnz": nnz, "index_dtype": str(W.col_indices().dtype), "first_projector_s": first_s,
                   "first_projector_note": "cold cache: astra matrix + save + torch CSR" if not args.cache_dir
                   else "with --cache-dir (cold only if the directory had no entry)",
                   "load_from_cache_s": load.median_s},
        "throughput": res,
        "ratios": ratios,
        "targets": targets,
        "ours_vs_astra_rel_l2": same,
        "cpu_monitor": mon.to_dict(),
    }
    env = environment(loadavg_before=env0.get("loadavg_1_5_15"))

    print(f"\nGeometry {g.image_size}x{g.image_size} @ {g.pixel_mm} mm, {g.n_radial} radial x {g.n_angles} angles; "
          f"system matrix nnz {nnz:,} ({results['matrix']['index_dtype']} indices); torch threads {threads}; "
          f"load average before/after {env.get('loadavg_before')} / {env.get('loadavg_1_5_15')}")
    if mon.other_cpu_fraction is not None:
        print(f"other processes used {100 * mon.other_cpu_fraction:.0f} % of the machine's CPU during the timings"
              + ("  (busy machine: numbers are pessimistic)" if mon.other_cpu_fraction > 0.1 else ""))
    print(f"first Projector (matrix build) {first_s:.2f} s; Projector from cache {load.median_s:.2f} s")
    print_table(rows, title="Forward-projection throughput (median)")
    print_table([{"ratio": k_, "value": v, "target": targets.get(k_, {}).get("target"),
                  "met": targets.get(k_, {}).get("met")} for k_, v in ratios.items()], title="Ratios")
    print(f"\nours vs astra-direct on one image: relative L2 {same:.2e} (same model)")
    if not args.no_write:
        print(f"wrote {write_results(args.name, results, env)}")
    return results


if __name__ == "__main__":
    main()
