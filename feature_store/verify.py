"""Check a feature store: ``frozenflow verify --features STORE [--ckpt best.pt] [--data DIR]``.

Checks metadata, completeness, shapes and dtypes, every chunk's crc32c checksum and finiteness on
a random sample of entries (a new sample each run, its seed printed; ``--seed`` repeats it,
``--full`` reads every sample), the teacher hash against a checkpoint, the dataset fingerprint,
and (with both --ckpt and --data) recomputes samples with the live teacher and compares within the
stored dtype's tolerance: a few at random, or with ``--full`` one in every shard file of every split.
Exit code 0 when everything holds, 1 otherwise, with a short report.
"""
from __future__ import annotations

import secrets
import sys

import numpy as np
import torch

from shared.device import DEVICE_HELP, resolve_device

from . import layout as L
from .engine import SplitArrays
from .manifest import manifest_of
from .reader import nonfinite_rows
from shared.errors import InputError

# float16 keeps 11 significant bits: relative error ≤ 2^-11 ≈ 4.9e-4 per value, plus fp32 noise
TOLERANCE = {"float16": 2e-3, "float32": 1e-4}


def verify(store, ckpt=None, data=None, n_check: int = 4, log=print, verbose: bool = False, *,
           full: bool = False, seed: int | None = None, device: str = "auto") -> list[str]:
    """Returns the list of problems (empty = the store is good).  Prints failures (all checks if verbose)."""
    problems = []

    def check(ok, msg):
        if verbose or not ok:
            log(f"  [{'ok' if ok else 'FAIL'}] {msg}")
        if not ok:
            problems.append(msg)
        return ok

    try:
        root = L.open_root(store, mode="r")
    except L.StoreError as e:
        check(False, str(e))
        return problems
    kind, detail = L.existing_kind(store)
    if kind == "foreign":
        check(False, f"{store}: not a feature store ({detail})")
        return problems
    m = manifest_of(root, store)
    check(m.format_version == L.FORMAT_VERSION, f"format_version {m.format_version}")
    taps, dtype, V = m.taps, m.dtype, m.n_variants
    teacher = None
    if ckpt:
        from shared.models.frozen import load_frozen

        teacher = load_frozen(ckpt, kind="teacher", device=resolve_device(device))
        check(m.teacher_sha256 == teacher.sha256,
              f"teacher sha256 {str(m.teacher_sha256)[:12]}… vs {ckpt} {teacher.sha256[:12]}…")
    dataset = None
    if data:
        from shared.data.dataset_io import open_dataset

        dataset = open_dataset(data)
        check(m.dataset_fingerprint == dataset.fingerprint(), f"dataset fingerprint matches {data}")
    if seed is None:
        seed = secrets.randbelow(2 ** 31)
    rng = np.random.default_rng(seed)
    log(f"  {'every sample' if full else 'random samples'} (seed {seed}; --seed {seed} repeats this choice)")
    for split, state in m.splits.items():
        n = state.n
        if not check(state.status == "complete", f"{split}: status {state.status!r}"):
            continue
        flags = L.done_flags(root, split)
        check(bool(flags.all()), f"{split}: {int(flags.sum())}/{flags.size} ranges flagged done")
        if dataset is not None:
            check(dataset.split(split).n == n, f"{split}: {n} samples, dataset has {dataset.split(split).n}")
        picks = list(range(n)) if full else sorted({0, n - 1, *rng.integers(0, n, size=n_check).tolist()})
        present = [t for t in taps if t in root[split]]
        for tap in taps:
            check(tap in present, f"{split}/{tap}: array missing ({store}/{split}/{tap}/zarr.json deleted?); "
                                  f"re-export with --overwrite")
        arrays = SplitArrays(store, split, present)
        for tap in present:
            arr = root[split][tap]
            expect = teacher.tap_shapes[tap] if teacher is not None else tuple(arr.shape[-3:])
            lead = (n, V) if V > 1 else (n,)
            check(tuple(arr.shape) == lead + tuple(expect) and str(arr.dtype) == dtype,
                  f"{split}/{tap}: shape {tuple(arr.shape)} dtype {arr.dtype}")
            bad = _bad_samples(arrays, tap, picks)
            shown = picks if len(picks) <= 8 else f"{len(picks)} samples"
            check(not bad, f"{split}/{tap}: {shown} read with valid checksums and finite values" if not bad else
                  f"{split}/{tap}: sample(s) " + "; ".join(f"{i} {why}" for i, why in bad[:5]) +
                  (f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""))
        if teacher is not None and dataset is not None:
            rec = recompute_picks(n, m.shard_size, rng, full, n_check)
            _recompute(root, split, present, teacher, dataset, rec, V, dtype, check)
        log(f"  {split}: {n} samples x {V} variant(s), taps {','.join(present)}, {dtype} checked")
    log("verify: " + ("store is good" if not problems else f"{len(problems)} problem(s)"))
    return problems


def _bad_samples(arrays: SplitArrays, tap: str, picks, block: int = 64) -> list[tuple[int, str]]:
    """(sample, reason) for each picked sample whose chunk fails its checksum or holds NaN/Inf: one
    engine read per block of samples, and sample by sample only where a block fails to decode."""
    bad, rows = [], []
    for s in range(0, len(picks), block):
        part = picks[s:s + block]
        try:
            rows += list(zip(part, arrays.read(tap, part)))
        except ValueError:  # crc32c mismatch or undecodable bytes somewhere in the block
            for i in part:
                try:
                    rows.append((i, arrays.read_one(tap, i)))
                except ValueError as e:
                    bad.append((i, f"damaged chunk ({str(e)[:60]})"))
    bad += [(i, "not finite (NaN = never written or chunk deleted)") for i, r in rows
            if nonfinite_rows(np.ascontiguousarray(r)[None])[0]]
    return sorted(bad)


def recompute_picks(n: int, shard: int | None, rng, full: bool, n_check: int) -> list[int]:
    """Samples the live teacher recomputes: ``n_check`` random ones, and with ``full`` also one random
    sample in every shard file (every sample of an unsharded store, whose files hold one each), so
    swapped shard or chunk files are caught."""
    picks = {int(i) for i in rng.choice(n, size=min(n_check, n), replace=False)}
    if full:
        unit = shard or 1
        picks |= {int(rng.integers(s, min(s + unit, n))) for s in range(0, n, unit)}
    return sorted(picks)


@torch.inference_mode()
def _recompute(root, split, taps, teacher, dataset, picks, V, dtype, check, batch: int = 16):
    from shared.data.views import TeacherRows, TeacherView

    view = TeacherView.of_teacher(teacher, dataset)  # the teacher's input exactly as the export made it
    rows = TeacherRows(dataset, split, view.kind)
    device = next(teacher.parameters()).device
    worst, where = 0.0, None
    for b in range(0, len(picks), batch):
        part = picks[b:b + batch]
        for v in range(V):
            _, live = teacher.forward_taps(view.input(rows.take(part, v), device), taps=list(taps), need_output=False)
            for tap in taps:
                ref_all = live[tap].float().cpu().numpy()
                for k, i in enumerate(part):
                    stored = np.asarray(root[split][tap][(i, v) if V > 1 else i], dtype=np.float32)
                    err = float(np.abs(stored - ref_all[k]).max() / max(np.abs(ref_all[k]).max(), 1e-6))
                    if err > worst:
                        worst, where = err, f"{tap} sample {i}"
    shown = picks if len(picks) <= 8 else f"{len(picks)} samples (one per shard file)"
    check(worst <= TOLERANCE[dtype], f"{split}: live teacher recomputation of {shown}: max relative error "
                                     f"{worst:.2e} at {where or '-'} (tolerance {TOLERANCE[dtype]:.0e} for {dtype})")


def parser():
    from shared.cli import new_parser

    p = new_parser("frozenflow verify", __doc__)
    p.add_argument("--features", required=True, help="feature store to check (features.zarr or fsspec URL)")
    p.add_argument("--ckpt", help="teacher checkpoint: check the store's teacher hash and recompute samples")
    p.add_argument("--data", help="dataset folder: check the fingerprint (with --ckpt: recompute samples)")
    p.add_argument("--samples", type=int, default=4, help="rows per split checked, chosen at random, beyond the first and last")
    p.add_argument("--full", action="store_true", help="read every sample of every tap (checksums and finiteness)")
    p.add_argument("--seed", type=int, help="seed of the random sample choice (default: a new one, printed)")
    p.add_argument("--verbose", action="store_true", help="list every check, not only failures")
    p.add_argument("--device", default="auto", help=DEVICE_HELP + "; runs the teacher for the recomputation")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    print(f"verify {args.features}")
    if args.samples < 0:
        raise InputError(f"--samples must be ≥ 0, got {args.samples}")
    from shared.cli import EXIT_INPUT

    # a store with problems is something the user can fix (re-export): the same code as bad input
    return EXIT_INPUT if verify(args.features, args.ckpt, args.data, args.samples, verbose=args.verbose,
                                full=args.full, seed=args.seed, device=args.device) else 0


if __name__ == "__main__":
    from shared.cli import run_main

    sys.exit(run_main(main))
