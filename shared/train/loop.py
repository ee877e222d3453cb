"""The one training loop, used by the teacher and the student, stand-alone or inside Ray Tune.

A phase supplies a :class:`Task` (its model and how a batch becomes prediction and target);
this loop does the rest: Adam with separate parameter groups, optional cosine schedule,
per-epoch validation on a fixed subset, best-checkpoint rule, CSV of metrics, atomic
checkpoints and exact resume, progress bar, and a report callback (Ray Tune or nothing).

Resume is exact on CPU: the shuffle order and every random draw of an epoch are seeded by
(seed, epoch), and the checkpoint carries model, optimiser, scheduler and history.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Sampler, Subset

from shared.files import checkpoint as ckpt_io
from shared.files.atomic import atomic_write, atomic_write_csv, atomic_write_json
from shared.config.schema import RunConfig, TrainConfig
from shared.data.batch import collate
from shared.device import autocast, loader_workers, resolve_amp, resolve_device
from shared.train.losses import get_loss
from shared.evaluation.metrics import all_metrics, metric_and_mode
from shared.files.outputs import claim
from shared.errors import InputError, TrainingError

LAST, BEST, METRICS_CSV, CONFIG_JSON = "last.pt", "best.pt", "metrics.csv", "config.json"


@dataclasses.dataclass
class Task:
    """What differs between phases.

    ``step(model, batch, device) -> (prediction, target)`` returns tensors over the region the
    loss and metrics are computed on.  ``extra_param_groups`` are optimiser groups beyond the
    model's own (e.g. the student's feature scales: ``{"params": [...], "lr_mult": 10}``).
    ``meta`` goes into every checkpoint (kind, data fingerprint, …).  ``preview(model, batch, path)``
    optionally draws a figure of predictions at the end.  ``scalars(model) -> {name: float}`` adds
    per-epoch values to the history (the student: mean |feature scale| per receiving tap).
    ``epoch_start(model, epoch, epochs) -> {name: float}`` runs before each training epoch (0-based) and
    its values are recorded in that epoch's row (the student's feature-dropout probability).
    """

    model: torch.nn.Module
    step: Callable[[torch.nn.Module, Any, torch.device], tuple[torch.Tensor, torch.Tensor]]
    kind: str
    meta: dict = dataclasses.field(default_factory=dict)
    extra_param_groups: list[dict] = dataclasses.field(default_factory=list)
    preview: Callable | None = None
    scalars: Callable[[torch.nn.Module], dict] | None = None
    normalize: float | None = None  # their normalize: target L1-normalised per sample × this (schema.normalized_scale)
    normalize_output: bool = False  # … and the prediction too (the built-in; a user's class normalises its own)
    epoch_start: Callable[[torch.nn.Module, int, int], dict] | None = None


@dataclasses.dataclass
class FitOptions:
    """How to train (not what): the run settings every phase's ``fit(config, data, out, options)`` takes."""

    epochs: int = 10
    device: str = "auto"  # cpu, cuda, cuda:N; auto = CUDA when available
    workers: int | None = None  # DataLoader worker processes; None: shared.device.loader_workers
    amp: str = "off"  # mixed precision: off, auto, bf16, fp16 (shared.device.resolve_amp)
    seed: int = 0  # initial weights, shuffle order, augmentation
    resume: bool = False  # continue OUT/last.pt; without it an existing run is refused, never overwritten
    metric: str = "nrmse"  # validation metric for best.pt (mse, nrmse, psnr, ssim, ssim_global, loss); not
    # ssim by default: a blank image matches the background window for window and can score well
    mode: str | None = None  # "max" | "min"; default from the metric
    val_samples: int = 64
    shuffle_block: int = 0  # >0: block shuffle in blocks of this many samples (EpochSampler)
    augment: bool = False  # random Radon-symmetric flips
    model: str = "builtin"  # model spec: builtin or a JSON/YAML spec file (shared.models.load_spec)
    progress: bool = True
    report: Callable[[dict, Path], None] | None = None  # called after each epoch's checkpoint

    def __post_init__(self):
        for name, low in (("epochs", 1), ("val_samples", 1), ("workers", 0), ("shuffle_block", 0)):
            value = getattr(self, name)
            if name == "workers" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"--{name.replace('_', '-')} must be an integer ≥ {low}, got {value!r}")
        metric_and_mode(self.metric, self.mode)
        from shared.models import load_spec

        load_spec(self.model)  # a missing or malformed spec fails before anything is written
        if self.model != "builtin":  # Ray trials and resumed runs find it from any working directory
            self.model = str(Path(self.model).resolve())
        resolve_amp(self.amp, resolve_device(self.device))


class EpochSampler(Sampler):
    """A shuffle whose order depends only on (seed, epoch), so a resumed run sees the same batches.

    With ``block`` > 0 the shuffle is by blocks: the blocks of ``block`` consecutive samples (a
    feature store's shards) are shuffled, then the samples within each window of ``window``
    consecutive blocks of that order, so a batch touches at most ``window`` shard files.
    """

    def __init__(self, n: int, seed: int, block: int = 0, window: int = 4):
        self.n, self.seed, self.epoch, self.block, self.window = n, seed, 0, block, window

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        if not self.block:
            return iter(torch.randperm(self.n, generator=g).tolist())
        starts = torch.arange(0, self.n, self.block)[torch.randperm(-(-self.n // self.block), generator=g)]
        order = []
        for w in range(0, len(starts), self.window):
            members = torch.cat([torch.arange(s, min(s + self.block, self.n)) for s in starts[w:w + self.window].tolist()])
            order += members[torch.randperm(len(members), generator=g)].tolist()
        return iter(order)

    def __len__(self):
        return self.n


def build_optimizer(task: Task, tc: TrainConfig) -> torch.optim.Optimizer:
    """Adam over the model, its learnable output scale (LR × output_scale_lr_mult) and extra groups."""
    lr, betas = float(tc.gen_lr), (float(tc.gen_b1), float(tc.gen_b2))
    own = getattr(task.model, "param_groups", None)  # a Network's (the class's own groups), then the task's
    extra = (list(own()) if callable(own) else []) + list(task.extra_param_groups)
    special = {id(p) for g in extra for p in g["params"]}
    groups = [{"params": [p for p in task.model.parameters() if id(p) not in special and p.requires_grad],
               "lr": lr, "name": "model"}]
    for g in extra:
        groups.append({"params": list(g["params"]), "lr": lr * float(g.get("lr_mult", 1.0)), "name": g["name"]})
    return torch.optim.Adam(groups, lr=lr, betas=betas)


def l1_normalized(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Each sample divided by its L1 norm, times ``scale``."""
    return scale * x / (x.abs().flatten(1).sum(1).view(-1, *[1] * (x.dim() - 1)) + 1e-8)


def _step(task: Task, model, batch, device):
    pred, target = task.step(model, batch, device)
    if pred.shape != target.shape:  # never let the loss broadcast one against the other
        raise InputError(f"{task.kind}: prediction has shape {list(pred.shape)} but the target {list(target.shape)}; "
                         f"check the config's channel keys against the data")
    if task.normalize is not None:  # over the region the loss sees, as their training loop does
        target = l1_normalized(target, task.normalize)
        if task.normalize_output:
            pred = l1_normalized(pred, task.normalize)
    return pred, target


@torch.no_grad()
def evaluate(task: Task, loader, device, loss_fn, amp: torch.dtype | None = None) -> dict[str, float]:
    task.model.eval()
    sums, n = {}, 0
    for batch in loader:
        with autocast(device, amp):
            pred, target = _step(task, task.model, batch, device)
        pred, target = pred.float(), target.float()  # metrics in full precision
        values = all_metrics(pred, target)
        values["loss"] = torch.full((pred.shape[0],), float(loss_fn(pred, target)))
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + float(v.sum())
        n += pred.shape[0]
    return {f"val_{k}": v / n for k, v in sums.items()}


def train(task: Task, run: RunConfig, train_set, val_set, out: str | Path, opts: FitOptions) -> dict:
    """Train, validate, checkpoint into ``out``; returns the best epoch's metrics.

    An existing run of this kind in ``out`` is continued with ``opts.resume`` and refused without it;
    any other folder that is not empty is refused (``shared.files.outputs.claim``).
    """
    out = claim(out, f"{task.kind} run", resume=opts.resume)  # the output rule (shared/files/outputs.py)
    device = resolve_device(opts.device)
    amp = resolve_amp(opts.amp, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels once
    metric, mode = metric_and_mode(opts.metric, opts.mode)
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
    if len(train_set) == 0 or len(val_set) == 0:
        raise InputError("training needs a non-empty train and val split")

    model = task.model.to(device)
    tc, config = run.train, run.flat
    loss_fn = get_loss(tc.sup_base_criterion)
    optimizer = build_optimizer(task, tc)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)  # fp16 gradients underflow unscaled
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=opts.epochs)
                 if tc.lr_schedule == "cosine" else None)

    with _run_logs(out, opts.progress) as (log, tb):
        start, best_value, best_metrics, history = 0, None, {}, []
        last_path = out / LAST
        if opts.resume and last_path.exists():
            state = ckpt_io.load(last_path, kind=task.kind)
            _check_resumable(last_path, state, config, task.meta)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state.get("scheduler"):
                scheduler.load_state_dict(state["scheduler"])
            if state.get("grad_scaler"):
                scaler.load_state_dict(state["grad_scaler"])
            start, best_value = state["epoch"], state["best_value"]
            best_metrics, history = state["metrics"], state["history"]
            log.info(f"[train] resuming {out} after epoch {start} (best {metric} = {best_value})")

        atomic_write_json(out / CONFIG_JSON, config)  # the resolved config this run trains (also in best.pt)
        write_provenance(out)
        batch_size = tc.batch_size
        sampler = EpochSampler(len(train_set), opts.seed, block=opts.shuffle_block)
        # pinned host memory lets the tasks' non_blocking copies overlap the GPU; workers are not
        # persistent because each epoch reseeds them (exact resume)
        workers = loader_workers(opts.workers, device)
        # forkserver: a forked worker inherits a broken tensorstore runtime (the feature reader's engine)
        loader_kw = dict(num_workers=workers, persistent_workers=False, pin_memory=device.type == "cuda", collate_fn=collate,
                         multiprocessing_context="forkserver" if workers else None)
        train_loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, drop_last=len(train_set) > batch_size,
                                  **loader_kw)
        val_subset = Subset(val_set, range(min(opts.val_samples, len(val_set))))
        val_loader = DataLoader(val_subset, batch_size=batch_size, shuffle=False, **loader_kw)

        for epoch in range(start, opts.epochs):
            torch.manual_seed(opts.seed * 100003 + epoch)  # dropout, augmentation and worker seeds of this epoch
            sampler.epoch = epoch
            model.train()
            scheduled = task.epoch_start(model, epoch, opts.epochs) if task.epoch_start is not None else {}
            t0, loss_sum, seen = time.time(), 0.0, 0
            bar = _progress(train_loader, f"epoch {epoch + 1}/{opts.epochs}", opts.progress)
            for k, batch in enumerate(bar):
                with autocast(device, amp):
                    pred, target = _step(task, model, batch, device)
                loss = loss_fn(pred.float(), target.float())
                if not torch.isfinite(loss):
                    order = list(sampler)  # the epoch's order is a function of (seed, epoch): name the samples
                    rows = order[k * batch_size:(k + 1) * batch_size]
                    raise TrainingError(f"training loss became {loss.item()} at epoch {epoch + 1}, batch {k + 1} "
                                             f"(train samples {rows[:16]}{' …' if len(rows) > 16 else ''}); the data "
                                             f"files were scanned finite, so lower gen_lr or check the data scales")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()  # scale/step/update are plain backward/step when disabled
                scaler.step(optimizer)
                scaler.update()
                loss_sum += loss.item() * pred.shape[0]
                seen += pred.shape[0]
                if opts.progress:
                    bar.set_postfix(loss=f"{loss_sum / seen:.4g}")
            if scheduler is not None:
                scheduler.step()
            row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), **scheduled}
            row.update(evaluate(task, val_loader, device, loss_fn, amp))
            row.update(lr=optimizer.param_groups[0]["lr"], seconds=round(time.time() - t0, 3))
            if task.scalars is not None:
                row.update(task.scalars(model))
            history.append(row)
            improved = best_value is None or better(row[metric], best_value)
            if improved:
                best_value, best_metrics = row[metric], dict(row)
                ckpt_io.save_atomic(_checkpoint(task, config, model, best_metrics, epoch + 1), out / BEST)
            state = _checkpoint(task, config, model, best_metrics, epoch + 1)
            state.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict() if scheduler else None,
                         grad_scaler=scaler.state_dict() if scaler.is_enabled() else None,
                         best_value=best_value, history=history, metric=metric, mode=mode)
            ckpt_io.save_atomic(state, last_path)
            atomic_write_csv(out / METRICS_CSV, history)
            shown = ", ".join(f"{k}={row[k]:.4g}" for k in ("train_loss", "val_loss", "val_psnr", "val_nrmse"))
            log.info(f"[train] epoch {epoch + 1}/{opts.epochs}: {shown}{' (best)' if improved else ''}")
            tb.add(row, epoch + 1)
            if opts.report is not None:
                opts.report(dict(row, **{f"best_{metric}": best_value}), out)

        _finish_figures(task, history, val_loader, device, out, best_metrics.get("epoch"), metric)
        return best_metrics


@contextlib.contextmanager
def _run_logs(out: Path, console: bool):
    """``train.log`` in the run folder and the console (when progress is on) through one logger, and
    TensorBoard scalars; both files appear only once there is something to write."""
    log = logging.getLogger(f"frozenflow.train.{id(out)}")
    log.setLevel(logging.INFO)
    log.propagate = False
    file = logging.FileHandler(out / "train.log", delay=True)
    file.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(file)
    if console:
        stream = logging.StreamHandler(sys.stdout)
        stream.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(stream)
    tb = _Scalars(out / "tensorboard")
    try:
        yield log, tb
    finally:
        for h in list(log.handlers):
            h.close()
            log.removeHandler(h)
        tb.close()


class _Scalars:
    """Each epoch's numbers as TensorBoard scalars (tensorboardX, which Ray installs) under ``folder``."""

    def __init__(self, folder: Path):
        self.folder, self.writer = folder, None

    def add(self, row: dict, step: int) -> None:
        if self.writer is None:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(self.folder))
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)):
                self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def write_provenance(out: Path) -> None:
    """``command.txt`` (this process's command line) and ``revision.txt`` (the project's git revision,
    ``-dirty`` with uncommitted changes) beside config.json, so a run folder says how it was made."""
    import shlex
    import subprocess

    atomic_write(out / "command.txt", (shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) + "\n").encode())
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev, dirty = "", ""
    atomic_write(out / "revision.txt", ((rev + ("-dirty" if dirty else "")) if rev else "unknown (not a git checkout)")
                 .encode() + b"\n")


# What a resumed run must share with the run it continues (the epoch budget may grow).
RESUME_META_KEYS = ("data_fingerprint", "teacher_sha256", "store_fingerprint", "model", "teacher_kind")
MODEL_IDENTITY = ("factory", "taps", "receivers", "side_init", "parameters")  # of meta["model"]


def _check_resumable(path: Path, state: dict, config: dict, meta: dict) -> None:
    """Refuse to continue a run with another config, dataset, teacher or feature store."""
    from shared.config.vocabulary import to_stored

    old = to_stored(state.get("config", {}))  # a run of an earlier version: its older key names
    for key in sorted(set(old) | set(config)):
        if old.get(key) != config.get(key):
            raise InputError(f"{path}: config key {key!r} is {config.get(key)!r} here but {old.get(key)!r} in the "
                             f"run being resumed; resume with the same config or choose another --out")
    for key in RESUME_META_KEYS:
        there, here = state.get("meta", {}).get(key), meta.get(key)
        if key == "teacher_kind" and here is not None:  # a teacher run from before the kinds: attenuation IS
            from shared.data.views import TeacherKind

            there = TeacherKind.of(there).record()
        if key == "model":  # the same class and maps; an edited comment in the factory file is no reason to stop
            there, here = ({k: (r or {}).get(k) for k in MODEL_IDENTITY} for r in (there, here))
        if key == "model" and there != here:
            diff = next(f"{k}: {there[k]!r} there, {here[k]!r} here" for k in MODEL_IDENTITY if there[k] != here[k])
            raise InputError(f"{path}: the model differs from the run being resumed ({diff}); resume with the same "
                             f"--model or choose another --out")
        if there != here:
            raise InputError(f"{path}: {key} differs from the run being resumed ({str(meta.get(key))[:12]}… here, "
                             f"{str(state.get('meta', {}).get(key))[:12]}… there); resume with the same data and "
                             f"features or choose another --out")


def _checkpoint(task, config, model, metrics, epoch) -> dict:
    return {"format_version": ckpt_io.FORMAT_VERSION, "kind": task.kind, "config": config,
            "model": model.state_dict(), "metrics": metrics, "epoch": epoch, "meta": task.meta}


def _progress(iterable, desc, enabled):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)


def _finish_figures(task, history, val_loader, device, out, best_epoch=None, metric=""):
    if not history:
        return
    from shared.evaluation.plots import learning_curve

    learning_curve(history, out / "learning_curve.png", best_epoch, metric)
    if any(k.startswith(("scale_", "mix_")) for k in history[-1]):
        from shared.evaluation.plots import feature_scale_curve

        feature_scale_curve(history, out / "feature_scales.png", task.meta.get("plan"))
    if task.preview is not None:
        best = ckpt_io.load(out / BEST, kind=task.kind)
        task.model.load_state_dict(best["model"])
        task.model.eval()
        with torch.no_grad():
            task.preview(task.model, next(iter(val_loader)), device, out / "val_preview.png")
