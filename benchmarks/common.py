"""Small helpers shared by the benchmarks: timing, environment capture, results JSON, markdown tables.

Results go to ``benchmarks/results/<name>.json`` as
``{"name", "created_utc", "environment", "results"}``, written atomically (``<name>.json.tmp`` first).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass
class Timing:
    """Wall-clock seconds per call: median (the number to report), min, max and every sample."""

    median_s: float
    min_s: float
    max_s: float
    repeats: int
    samples_s: list[float]

    def per_second(self, items_per_call: float = 1.0) -> float:
        """Throughput (items/s) from the median."""
        return items_per_call / self.median_s if self.median_s > 0 else math.inf

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def time_call(fn: Callable[[], Any], repeats: int = 10, warmup: int = 2, sync: Callable[[], None] | None = None) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones (perf_counter).

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called before each clock read, for asynchronous devices.
    """
    if repeats < 1:
        raise ValueError("time_call: repeats must be >= 1")
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        samples.append(time.perf_counter() - t0)
    return Timing(statistics.median(samples), min(samples), max(samples), repeats, samples)


def _proc_stat_busy() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine from /proc/stat (Linux), or None."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    total = sum(vals[:8])  # guest time is already counted in user/nice
    return (total - idle) / hz, total / hz


class CpuMonitor:
    """Context manager: how much CPU *other* processes used while the block ran (Linux only).

    ``other_cpu_fraction`` = (machine busy CPU time − this process's CPU time) / (wall time × CPUs);
    near 0 on a quiet machine, so benchmark numbers can be judged.  None where /proc/stat is missing.
    """

    def start(self) -> "CpuMonitor":
        self._stat0, self._own0, self._t0 = _proc_stat_busy(), time.process_time(), time.perf_counter()
        return self

    def stop(self) -> "CpuMonitor":
        stat1, own1, t1 = _proc_stat_busy(), time.process_time(), time.perf_counter()
        self.wall_s = t1 - self._t0
        self.own_cpu_s = own1 - self._own0
        self.other_cpu_fraction = None
        if self._stat0 and stat1 and stat1[1] > self._stat0[1]:
            busy = stat1[0] - self._stat0[0]
            self.other_cpu_fraction = max(0.0, (busy - self.own_cpu_s) / (stat1[1] - self._stat0[1]))
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def to_dict(self) -> dict:
        return {"wall_s": self.wall_s, "own_cpu_s": self.own_cpu_s, "other_cpu_fraction": self.other_cpu_fraction}


def environment(**extra: Any) -> dict:
    """What the numbers depend on: interpreter, platform, CPU count, load, library versions."""
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        env["cpu_affinity"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        env["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    for mod in ("numpy", "scipy", "torch"):
        m = sys.modules.get(mod)
        if m is not None:
            env[f"{mod}_version"] = getattr(m, "__version__", "?")
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch_threads"] = torch.get_num_threads()
        env["cuda_available"] = bool(torch.cuda.is_available())
    env.update(extra)
    return env


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _jsonable(dataclasses.asdict(x))
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 1) == 0:  # numpy / torch scalars
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def write_results(name: str, results: Mapping[str, Any], env: Mapping[str, Any] | None = None,
                  results_dir: str | Path | None = None) -> Path:
    """Write ``results`` (plus environment and a UTC timestamp) to ``<results_dir>/<name>.json``."""
    out_dir = Path(results_dir) if results_dir else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    payload = {
        "name": name,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": _jsonable(dict(env) if env is not None else environment()),
        "results": _jsonable(dict(results)),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def _fmt(v: Any, floatfmt: str) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else ("yes" if v else "no")
    if isinstance(v, float):
        return format(v, floatfmt)
    return str(v).replace("|", "\\|")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Iterable[str] | None = None,
                   floatfmt: str = ".4g") -> str:
    """A GitHub-markdown table of ``rows`` (dicts); columns default to the keys in first-seen order."""
    if columns is None:
        cols: list[str] = []
        for r in rows:
            cols += [k for k in r if k not in cols]
    else:
        cols = list(columns)
    cells = [[_fmt(r.get(c), floatfmt) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    numeric = [all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) for r in rows if r.get(c) is not None)
               for c in cols]

    def line(vals):
        return "| " + " | ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(cols), sep] + [line(r) for r in cells])


def print_table(rows: Sequence[Mapping[str, Any]], columns: Iterable[str] | None = None, title: str | None = None,
                floatfmt: str = ".4g") -> None:
    if title:
        print(f"\n### {title}\n")
    print(markdown_table(rows, columns, floatfmt))


def kill_args(argv, doc: str, kills: int, epochs: int | None = None):
    """The kill harnesses' flags (``--kills``, ``--seed``, optionally ``--epochs``) and the seeded generator
    of kill instants."""
    import argparse

    import numpy as np

    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--kills", type=int, default=kills)
    if epochs is not None:
        ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    return a, np.random.default_rng(a.seed)


def tiny_workspace(prefix: str):
    """The kill harnesses' setting: a temporary folder with its own cache, the tests' tiny dataset in
    ``data`` and the tiny teacher config in ``t.json``; returns (work, data, config path)."""
    import tempfile
    from pathlib import Path

    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.setdefault("FROZENFLOW_CACHE", str(work / "cache"))
    from shared.data.synthetic import make_synthetic_dataset
    from tests.conftest import TINY_GEOMETRY, tiny_teacher_config

    data = work / "data"
    make_synthetic_dataset(data, 24, 8, 8, seed=0, counts=5e4, montage=False, progress=False, **TINY_GEOMETRY)
    config = work / "t.json"
    config.write_text(json.dumps(tiny_teacher_config()))
    return work, data, config


def kill_rounds(kills: int, rng, full_s: float, start_cmd: Callable[[int], list],
                after: Callable[[int], dict], whole_group: Callable[[int], bool] = lambda k: False) -> list[dict]:
    """The kill harnesses' loop: round k starts ``start_cmd(k)``, SIGKILLs it at a random instant in
    [0, ``full_s``) unless it finished first — the process alone, or with ``whole_group(k)`` its whole
    process group (a machine crash: every child it started dies with it) — then ``after(k)`` reruns and
    checks it, returning at least ``{"survived": bool, "error": str}``. One line per round is printed."""
    import signal
    import subprocess

    rounds = []
    for k in range(kills):
        delay = float(rng.uniform(0, full_s))
        group = whole_group(k)
        proc = subprocess.Popen(start_cmd(k), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=group)
        time.sleep(delay)
        finished_first = proc.poll() is not None
        if not finished_first:
            (os.killpg if group else os.kill)(proc.pid, signal.SIGKILL)
        proc.wait()
        rounds.append({"kill_after_s": round(delay, 3), "finished_before_kill": finished_first,
                       "killed": "process group" if group else "process", **after(k)})
        print(f"kill {k + 1}/{kills} after {delay:.2f} s of {full_s:.2f} s: "
              f"{'ok' if rounds[-1]['survived'] else 'LOST'} {rounds[-1]['error']}", flush=True)
    return rounds


def rerun_error(result) -> str:
    """The last stderr line of a failed rerun (``subprocess.run`` result), or ''."""
    return "" if result.returncode == 0 else (result.stderr.strip().splitlines() or [""])[-1]


def kill_summary(name: str, rounds: list[dict], outcome: str, **extra) -> int:
    """Print and write ``benchmarks/results/<name>.json`` for a kill harness; exit code 0 when all survived."""
    survived = sum(r["survived"] for r in rounds)
    killed = sum(not r["finished_before_kill"] for r in rounds)
    print(f"{killed} kills injected ({len(rounds) - killed} runs finished first), {survived}/{len(rounds)} {outcome}")
    write_results(name, {**extra, "kills_injected": killed, "rounds": len(rounds), "survived": survived,
                         "details": rounds}, environment())
    return 0 if survived == len(rounds) else 1
