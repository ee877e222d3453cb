"""The student as a training Task, and rebuilding a trained student from ``student.pt``.

The feature store is known only through its manifest (``feature_store.open_store``) and its reader.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from feature_store import StoreError, StoreManifest
from shared.files import checkpoint as ckpt_io
from shared.config.schema import RunConfig
from shared.data.views import TeacherKind
from shared.models import ModelSpec, load_spec
from shared.models.network import Network, record
from shared.models.restore import rebuild
from shared.train.loop import Task

from .data import StudentDataset
from .injection import build_student
from shared.errors import InputError


def student_network(run: RunConfig, store: StoreManifest | None, spec: ModelSpec | None = None) -> Network:
    """The student for ``run`` with the features of ``store`` (needed when the config injects)."""
    inj = run.injection
    needed = sorted(set(inj.plan.values()))
    if needed and store is None:
        raise StoreError(f"injection of {needed} needs --features STORE (or --inject none)")
    shapes = store.tap_shapes if store else {}
    missing = [t for t in needed if t not in shapes]
    lost = [t for t in missing if t in store.taps]
    if lost:
        raise StoreError(f"{store.path}: tap(s) {lost} are in the store's metadata but their arrays are missing "
                         f"(array metadata deleted?); run frozenflow verify on it, re-export with --overwrite")
    if missing:
        raise StoreError(f"{store.path}: missing tap(s) {missing} needed by inject_levels "
                         f"{list(inj.inject_levels)} (store levels {store.levels}); re-export with --levels "
                         f"including them")
    teacher_paths = (store.attrs.get("teacher_model") or {}).get("taps", {}) if store else {}
    return build_student(run, spec or load_spec("builtin"), shapes, teacher_paths)


def student_datasets(run: RunConfig, data, store: StoreManifest | None, splits=("train", "val"), augment=False,
                     seed=0, teacher_sha256: str | None = None):
    """One StudentDataset per split.  ``teacher_sha256``: the teacher the features must come from
    (a trained student's record); the store's own hash is checked against it, not against itself."""
    inj = run.injection
    taps = sorted(set(inj.plan.values()))
    perm = {}
    if inj.shuffle_features:  # another patient's features: a derangement per split
        rng = np.random.default_rng(seed + 7)
        for s in splits:
            n = data.split(s).n
            perm[s] = (np.arange(n) + rng.integers(1, max(n, 2))) % n if n > 1 else np.arange(n)
    return [StudentDataset(data, s, run.sino_size, store=store.path if store and taps else None,
                           taps=taps, teacher_sha256=teacher_sha256, augment=augment and s == "train",
                           feature_permutation=perm.get(s), atten_channel=inj.atten_channel) for s in splits]


def student_task(run: RunConfig, data, store: StoreManifest | None, spec: ModelSpec | None = None) -> Task:
    model = student_network(run, store, spec)
    if run.image_size != data.geometry.image_size:
        raise InputError(f"config gen_image_size={run.image_size} but the dataset's images are "
                         f"{data.geometry.image_size} (geometry.image_size in {data.root}/dataset.json)")
    if run.sino_channels != data.sino_channels:
        raise InputError(f"config {run.sino_channel_key}={run.sino_channels} but {data.root} has "
                         f"{data.sino_channels}-channel sinograms (sino_channels in dataset.json)")

    def step(model, batch, device):
        feats = {t: f.to(device, non_blocking=True) for t, f in batch.get("features", {}).items()}
        pred = model(batch["sino"].to(device, non_blocking=True), feats or None)
        return pred, batch["image"].to(device, non_blocking=True)

    def preview(model, batch, device, path):
        from shared.evaluation.plots import image_grid

        pred, target = step(model, batch, device)
        rows = [[batch["sino"][i, 0].numpy(), target[i, 0].cpu().numpy(), pred[i, 0].cpu().numpy()]
                for i in range(min(4, pred.shape[0]))]
        image_grid(rows, ["activity sinogram (padded)", "true activity", "student"], path,
                   shared_columns=[[0], [1, 2]], cmap="hot")

    inj = run.injection
    extra = []
    if model.plan and inj.feature_scale_trainable:
        extra.append({"params": model.feature_scale_parameters(), "lr_mult": inj.feature_scale_lr_mult,
                      "name": "feature_scales"})
    uses_store = bool(store and model.plan)
    meta = {"direction": "SI", "data_fingerprint": data.fingerprint(), "scales": dict(data.scales),
            "plan": model.plan, "teacher_shapes": {t: list(s) for t, s in model.feature_shapes.items()},
            "model": record(model),
            "teacher_sha256": store.teacher_sha256 if uses_store else None,
            "teacher_kind": store.teacher_kind.record() if uses_store else None,
            "routing": inj.inject_routing if uses_store else None,
            "store_fingerprint": store.fingerprint if uses_store else None,
            "controls": {"shuffle_features": inj.shuffle_features, "atten_channel": inj.atten_channel},
            "input_scale": float(data.scales.get("actSino", 1.0)),
            "output_scale": float(data.scales.get("actMap", 1.0))}
    prefix = "scale_" if inj.inject_merge == "scale" else "mix_"

    def scalars(model):  # the thing the experiments are about: how much of each feature is used
        return {f"{prefix}{s}": v for s, v in model.injection_strength().items()}

    def epoch_start(model, epoch, epochs):  # the feature-dropout schedule (training only: eval draws nothing)
        model.feature_drop = inj.feature_drop_at(epoch, epochs)
        return {"feature_drop": model.feature_drop}

    drops = bool(model.plan) and inj.feature_drop_max > 0
    return Task(model=model, step=step, kind="student", meta=meta, extra_param_groups=extra, preview=preview,
                scalars=scalars if model.plan else None, normalize=run.normalized_scale,
                normalize_output=model.spec.builtin, epoch_start=epoch_start if drops else None)


def load_student(path: str | Path, device="cpu") -> Network:
    """A trained student from ``student.pt`` alone (eval mode, frozen), with ``.meta``, ``.run`` (its parsed
    config) and ``.config`` (the flat dict it holds)."""
    ckpt = ckpt_io.load(path, kind="student")
    meta = ckpt.get("meta", {})
    shapes = {t: tuple(s) for t, s in meta.get("teacher_shapes", {}).items()}
    run = RunConfig.parse(ckpt["config"], "student")
    if meta.get("teacher_kind"):  # auto routing, as it was resolved against the store's teacher
        run = run.routed(TeacherKind.of(meta["teacher_kind"]).direction)
    inj = run.injection
    model = rebuild(ckpt, path, "SI", atten_channel=inj.atten_channel, plan=inj.plan, feature_shapes=shapes,
                    scale_init=inj.feature_scale_init, scale_trainable=inj.feature_scale_trainable,
                    merge=inj.inject_merge, drop_mode=inj.feature_drop_mode)
    model.eval().requires_grad_(False).to(device)
    model.run, model.config, model.meta, model.metrics = run, run.flat, meta, ckpt.get("metrics", {})
    model.sha256, model.path = ckpt_io.sha256_file(path), str(path)
    return model
