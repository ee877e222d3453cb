"""Ray Tune around the one training loop: Optuna (or random) search + ASHA, resumable, best.pt out.

Each trial trains into ``OUT/trials/<trial_id>/`` (absolute path, so it works on shared storage
for a cluster) and reports every epoch with a Ray checkpoint holding ``last.pt``; a restored
trial copies that back and the training loop resumes exactly.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from shared.files.atomic import atomic_write_csv, atomic_write_json
from shared.files.outputs import claim
from shared.train.loop import BEST, CONFIG_JSON, LAST
from shared.errors import InputError, TrainingError

TRIALS_DIR = "trials"
RESOURCES_JSON = "resources.json"  # in each trial folder: the CPUs/GPUs Ray gave it and the device it used


def trial_out_dir(out_root: str | Path, kind: str) -> Path:
    from ray import tune

    out = claim(Path(out_root) / TRIALS_DIR / tune.get_context().get_trial_id(), f"{kind} run", resume=True)
    ckpt = tune.get_checkpoint()
    if ckpt is not None:  # Ray restored this trial: continue from its last reported epoch
        with ckpt.as_directory() as d:
            if (Path(d) / LAST).exists():
                shutil.copy2(Path(d) / LAST, out / LAST)
    return out


def report_to_tune(metrics: dict, out: Path) -> None:
    from ray import tune

    with tempfile.TemporaryDirectory() as d:
        shutil.copy2(out / LAST, Path(d) / LAST)
        tune.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                    checkpoint=tune.Checkpoint.from_directory(d))


DRIVER_RECORD = "driver.json"  # in OUT/ray: the driver's pid and the local Ray session it started


def stop_orphaned_ray(out_dir: Path, log=print) -> int:
    """Stop the Ray processes a killed driver of this experiment left running (its record names the
    session); a driver that still runs is refused instead. Returns how many processes were stopped."""
    import psutil

    path = Path(out_dir) / "ray" / DRIVER_RECORD
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0
    try:
        alive = psutil.Process(rec["pid"]).create_time() == rec["created"]
    except (psutil.Error, KeyError):
        alive = False
    if alive:
        raise InputError(f"{out_dir}: its tune driver (pid {rec['pid']}) is still running; wait for it or stop it "
                           f"before --resume")
    session, stopped = rec.get("session_dir") or "", 0
    for p in session_processes(session):
        try:
            p.kill()
            stopped += 1
        except psutil.Error:
            pass
    if stopped:
        log(f"[tune] stopped {stopped} Ray process(es) left running by the killed driver pid {rec['pid']} "
            f"(session {Path(session).name})")
    path.unlink(missing_ok=True)
    return stopped


def session_processes(session: str) -> list:
    """The processes of a local Ray session: its path in their command line (raylet, GCS, monitors) or
    among their open files (the agents, whose command lines Ray rewrites to ``ray::…``)."""
    import psutil

    found = []
    if not session:
        return found
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.pid == os.getpid():
            continue
        try:
            if (any(session in a for a in (p.info["cmdline"] or []))
                    or any(f.path.startswith(session) for f in p.open_files())):
                found.append(p)
        except psutil.Error:
            pass
    return found


def _record_driver(out_dir: Path) -> None:
    """Which local Ray this driver started, so a later run can stop it if this driver is killed."""
    import psutil
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    session = node.get_session_dir_path() if node is not None else None
    (Path(out_dir) / "ray").mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(out_dir) / "ray" / DRIVER_RECORD,
                      {"pid": os.getpid(), "created": psutil.Process().create_time(), "session_dir": session})


def init_ray(address: str | None, num_cpus: int | None = None):
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # "local": a new Ray of this process, even when a `ray start` cluster runs on the machine
        # (a bare ray.init() would join that one, and refuse num_cpus)
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)


def ray_gpu_share(requested: float | None, flag: str, device: str, address: str | None, unit: str) -> float:
    """Start (or join) Ray and return the GPUs each ``unit`` (trial or export worker) asks for:
    ``requested``, or by default 1 when a node has a GPU and else 0.  Refused at once, each with one
    line: a negative share, ``--device cuda:N`` (Ray assigns the GPU), more GPUs than the largest node
    has (Ray would keep the request pending forever; for a local Ray this is checked against the GPUs
    torch sees, before Ray's start-up time is spent), and ``--device cuda`` with no GPU share."""
    import ray
    import torch

    if requested is not None and requested < 0:
        raise InputError(f"{flag} must be ≥ 0, got {requested:g}")
    if ":" in str(device):
        raise InputError(f"--device {device}: Ray assigns each {unit} its GPU(s); use --device auto (or cuda)")
    if requested and not address and not ray.is_initialized():  # the local Ray gets the GPUs torch sees
        local = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if requested > local:
            raise InputError(f"{flag} {requested:g}: the Ray cluster has {local} GPU(s) (a local Ray on this machine, "
                             f"where torch sees {local}), so no {unit} could ever start")
    init_ray(address)
    nodes = [n["Resources"].get("GPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    most, total = max(nodes, default=0.0), sum(nodes)
    gpus = (1.0 if most >= 1 else 0.0) if requested is None else float(requested)
    if gpus > most:
        raise InputError(f"{flag} {requested:g}: the Ray cluster has {total:g} GPU(s) ({most:g} on its largest "
                         f"node), so no {unit} could ever start; ask for at most {most:g}")
    if gpus == 0 and str(device).lower() == "cuda":
        raise InputError(f"--device cuda with 0 GPUs per {unit}: Ray hides the GPUs from a {unit} that asks for "
                         f"none; pass {flag}")
    return gpus


def run_tune(trainable: Callable[[dict], None], param_space: dict, *, out_dir: str | Path, name: str, metric: str,
             mode: str, num_samples: int, epochs: int, max_concurrent: int | None = None, cpus_per_trial: float = 1,
             gpus_per_trial: float = 0, resume: bool = False, searcher: str = "optuna", ray_address: str | None = None, seed: int = 0,
             loggers: list[str] | None = None):
    """Run (or with ``resume`` continue) a Tune experiment stored under ``OUT/ray/<name>``."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    out_dir = Path(out_dir).resolve()
    storage = out_dir / "ray"
    exp_path = storage / name
    init_ray(ray_address)
    if not ray_address:  # a local Ray of this driver: recorded, so a killed driver's Ray can be stopped later
        _record_driver(out_dir)
    resources = tune.with_resources(trainable, {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    if resume and tune.Tuner.can_restore(str(exp_path)) and not any(exp_path.glob("experiment_state-*.json")):
        # killed before Tune saved its first state (only tuner.pkl): Ray would restore it with trials of an
        # empty config, so it starts afresh; the folder holds Ray's own bookkeeping and no trial of ours
        print(f"[tune] {exp_path}: the killed run saved no trial state yet; starting the experiment afresh")
        shutil.rmtree(exp_path)
    if resume and tune.Tuner.can_restore(str(exp_path)):
        print(f"[tune] restoring {exp_path}")
        tuner = tune.Tuner.restore(str(exp_path), resources, resume_unfinished=True, resume_errored=True)
    else:
        if exp_path.exists() and not resume:
            raise InputError(f"{exp_path}: a tune experiment already exists; pass --resume to continue it "
                                  f"or choose another --out")
        if searcher == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            search_alg = OptunaSearch(seed=seed)
        elif searcher == "random":
            search_alg = None
        else:
            raise InputError(f"searcher must be 'optuna' or 'random', got {searcher!r}")
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max(epochs, 1),
                                  grace_period=min(2, max(epochs, 1)), reduction_factor=2)
        tuner = tune.Tuner(
            resources, param_space=param_space,
            tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=num_samples,
                                        max_concurrent_trials=max_concurrent, search_alg=search_alg,
                                        scheduler=scheduler, trial_name_creator=_short_name,
                                        trial_dirname_creator=_short_name),
            run_config=tune.RunConfig(name=name, storage_path=str(storage), callbacks=logger_callbacks(loggers, out_dir, name),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=2), verbose=1))
    return tuner.fit()


LOGGERS = ("tensorboard", "csv", "mlflow")


def _short_name(trial) -> str:
    return f"trial_{trial.trial_id}"  # instead of a ~200-character name built from the config


def parse_loggers(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [x for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in LOGGERS]
    if bad or not names:
        raise InputError(f"--logger must be a comma list drawn from {list(LOGGERS)}, got {text!r}")
    return names


def logger_callbacks(names: list[str] | None, out_dir: Path, name: str):
    """Ray Tune logger callbacks for ``--logger``.  Ray adds its CSV, JSON and TensorBoard loggers
    to whatever is asked for (it restores experiments from those records), so ``mlflow`` is the
    one name that adds something; asking for the others says so."""
    if names is None:
        return None
    if set(names) & {"tensorboard", "csv"}:
        print("[tune] --logger: Ray Tune writes CSV, JSON and TensorBoard records of every trial in any case "
              "(OUT/ray/<name>/trial_*); --logger mlflow adds an MLflow run per trial")
    from ray.tune.logger import CSVLoggerCallback, TBXLoggerCallback

    callbacks = []
    for n in names:
        if n == "tensorboard":
            callbacks.append(TBXLoggerCallback())
        elif n == "csv":
            callbacks.append(CSVLoggerCallback())
        else:
            try:
                import mlflow  # noqa: F401
            except ImportError:
                raise InputError("--logger mlflow needs the mlflow package (pip install mlflow)") from None
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            callbacks.append(MLflowLoggerCallback(tracking_uri=(out_dir / "mlruns").as_uri(), experiment_name=name))
    return callbacks


def tune_from_cli(args, out: Path, name: str, space: dict, fit_trial: Callable[[dict, Path, Callable], None]) -> dict:
    """``--tune`` for a phase's entry point: every trial trains with ``fit_trial(config, trial_dir,
    report)`` using ``--cpus-per-trial`` torch threads and ``--gpus-per-trial`` GPUs (Ray makes the
    assigned ones the trial's only visible devices, so ``--device auto`` finds them); the best
    trial's best.pt lands in OUT."""
    import torch

    from shared.device import resolve_device
    from shared.evaluation.metrics import metric_and_mode

    metric, mode = metric_and_mode(args.metric, args.mode)
    claim(out, f"{name} tune", resume=args.resume)  # before Ray starts: a run or another folder is refused
    if not args.ray_address:
        stop_orphaned_ray(out)
    threads = max(1, int(args.cpus_per_trial))
    gpus = ray_gpu_share(args.gpus_per_trial, "--gpus-per-trial", args.device, args.ray_address, "trial")
    resources = {"cpu": args.cpus_per_trial, "gpu": gpus}
    print(f"[{name}] tune: {args.cpus_per_trial:g} CPU(s) and {gpus:g} GPU(s) per trial")

    def trial(config):
        import ray

        torch.set_num_threads(threads)
        trial_dir = trial_out_dir(out, name)
        atomic_write_json(trial_dir / RESOURCES_JSON, {
            **resources, "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "device": str(resolve_device(args.device)), "torch_threads": threads, "started": time.time()})
        fit_trial(config, trial_dir, report_to_tune)

    results = run_tune(trial, space, out_dir=out, name=name, metric=metric, mode=mode,
                       num_samples=args.num_samples, epochs=args.epochs, max_concurrent=args.max_concurrent,
                       cpus_per_trial=args.cpus_per_trial, gpus_per_trial=gpus, resume=args.resume,
                       searcher=args.searcher, ray_address=args.ray_address, seed=args.seed,
                       loggers=parse_loggers(args.logger))
    summary = collect_results(results, out, metric, mode, resources)
    (Path(out) / "ray" / DRIVER_RECORD).unlink(missing_ok=True)  # finished: nothing of it to stop later
    print(f"[{name}] tune: best trial {summary['best_trial']} {metric}={summary[metric]:.4f} "
          f"(epoch {summary['best_epoch']}) of "
          f"{summary['n_trials']} trials -> {out / BEST}, {out / 'trials.csv'}")
    return summary


def collect_results(results, out_dir: str | Path, metric: str, mode: str, resources: dict | None = None) -> dict:
    """Copy the best trial's best.pt to OUT/best.pt; write OUT/trials.csv (with each trial's device and
    GPU ids), OUT/tune_summary.json (with the per-trial ``resources``) and the tuning curve."""
    out_dir = Path(out_dir).resolve()
    errors = [r.error for r in results if r.error is not None]
    ok = [r for r in results if r.metrics and metric in r.metrics]
    if not ok:
        raise TrainingError(f"no trial reported {metric!r}; first error: {errors[0] if errors else 'none'}")
    from shared.files.checkpoint import load, save_atomic

    # The numbers come from each trial's own checkpoints, not from Ray's result table: after a killed
    # driver and --resume, Ray's table can hold a restored trial's first epochs only.
    own = {r.metrics["trial_id"]: _trial_checkpoints(out_dir, r.metrics["trial_id"], metric) for r in ok}
    scored = {t: v for t, v in own.items() if v["best_value"] is not None}
    if not scored:
        raise TrainingError(f"no trial wrote a best.pt with {metric!r} under {out_dir / TRIALS_DIR}")
    pick = max if mode == "max" else min
    trial_id = pick(scored, key=lambda t: scored[t]["best_value"])
    best = next(r for r in ok if r.metrics["trial_id"] == trial_id)
    save_atomic(load(out_dir / TRIALS_DIR / trial_id / BEST), out_dir / BEST)
    rows = []
    for r in results:
        if not r.metrics:
            continue
        mine = own.get(r.metrics.get("trial_id")) or _trial_checkpoints(out_dir, r.metrics.get("trial_id"), metric)
        used = _trial_resources(out_dir, r)
        rows.append({"trial_id": r.metrics.get("trial_id"), "epochs": mine["epochs"],
                     f"best_{metric}": mine["best_value"], "error": "yes" if r.error else "",
                     "device": used.get("device", ""), "gpu_ids": " ".join(used.get("gpu_ids", [])),
                     **{f"config/{k}": json.dumps(v) if isinstance(v, (list, dict)) else v
                        for k, v in _trained_config(out_dir, r).items()}})
    rows.sort(key=lambda row: (row[f"best_{metric}"] is None, -(row[f"best_{metric}"] or 0) if mode == "max"
                               else (row[f"best_{metric}"] or 0)))
    fields = sorted({k for row in rows for k in row}, key=lambda k: (k.startswith("config/"), k))
    atomic_write_csv(out_dir / "trials.csv", rows, fields)
    _tuning_curve(results, metric, out_dir / "tuning_curve.png")
    summary = {"best_trial": trial_id, metric: float(scored[trial_id]["best_value"]),
               "best_epoch": int(scored[trial_id]["best_epoch"]), "n_trials": len(rows),
               "n_errored": len(errors), "resources_per_trial": resources,
               "best_config": _trained_config(out_dir, best)}
    atomic_write_json(out_dir / "tune_summary.json", summary, default=str)
    atomic_write_json(out_dir / "best_config.json", summary["best_config"])  # `--config` takes it as is
    return summary


def _trial_checkpoints(out_dir: Path, trial_id, metric: str) -> dict:
    """A trial's best value and epoch (its best.pt) and the epochs it trained (its last.pt)."""
    from shared.files.checkpoint import CheckpointError, load

    folder = out_dir / TRIALS_DIR / str(trial_id)
    out = {"best_value": None, "best_epoch": None, "epochs": None}
    try:
        best = load(folder / BEST)
        out.update(best_value=best["metrics"].get(metric), best_epoch=best["metrics"].get("epoch"))
        out["epochs"] = load(folder / LAST)["epoch"]
    except (CheckpointError, KeyError):
        pass
    return out


def _trial_resources(out_dir: Path, result) -> dict:
    path = out_dir / TRIALS_DIR / str((result.metrics or {}).get("trial_id")) / RESOURCES_JSON
    return json.loads(path.read_text()) if path.exists() else {}


def _trained_config(out_dir: Path, result) -> dict:
    """The config the trial trained (its config.json), which may differ from what Ray sampled."""
    trial_id = (result.metrics or {}).get("trial_id")
    path = out_dir / TRIALS_DIR / str(trial_id) / CONFIG_JSON
    return json.loads(path.read_text()) if path.exists() else dict(result.config or {})


def _tuning_curve(results, metric, path):
    from shared.evaluation.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        df = r.metrics_dataframe
        if df is not None and metric in df:
            ax.plot(df["training_iteration"], df[metric], "o-", alpha=0.7, label=r.metrics.get("trial_id", "?"))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title("tuning curves (ASHA stops the weak trials early)")
    ax.grid(alpha=0.3)
    if len(results) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
