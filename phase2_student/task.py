"""The student as a training Task, and rebuilding a trained student from ``student.pt``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from feature_store import layout as L
from shared import checkpoint as ckpt_io
from shared.training import Task

from .data import StudentDataset
from .injection import InjectedGenerator, injection_plan


def store_info(store) -> dict:
    """Root attributes of a feature store plus its fingerprint and per-tap (C,H,W)."""
    root = L.open_root(store, mode="r")
    attrs = dict(root.attrs)
    some_split = next(iter(attrs.get("splits", {})), None)
    shapes = {t: tuple(root[some_split][t].shape[-3:]) for t in attrs.get("taps", [])} if some_split else {}
    return {**attrs, "fingerprint": L.store_fingerprint(attrs), "tap_shapes": shapes, "path": str(store)}


def controls_of(config: dict) -> dict:
    return {"shuffle_features": bool(config.get("shuffle_features", False)),
            "atten_channel": bool(config.get("atten_channel", False))}


def build_student(config: dict, store: dict | None) -> InjectedGenerator:
    plan = injection_plan(config)
    if plan and store is None:
        raise L.StoreError(f"injection of {sorted(set(plan.values()))} needs --features STORE (or --inject none)")
    shapes = store["tap_shapes"] if store else {}
    missing = sorted(set(plan.values()) - set(shapes))
    if missing:
        raise L.StoreError(f"{store['path']}: missing tap(s) {missing} needed by inject_levels "
                           f"{config.get('inject_levels')} (store levels {store.get('levels')}); re-export with "
                           f"--levels including them")
    return InjectedGenerator(config, shapes, extra_input_channels=1 if controls_of(config)["atten_channel"] else 0)


def student_datasets(config: dict, data, store: dict | None, splits=("train", "val"), augment=False, seed=0):
    model_taps = sorted(set(injection_plan(config).values()))
    perm = {}
    if controls_of(config)["shuffle_features"]:  # another patient's features: a derangement per split
        rng = np.random.default_rng(seed + 7)
        for s in splits:
            n = data.split(s).n
            perm[s] = (np.arange(n) + rng.integers(1, max(n, 2))) % n if n > 1 else np.arange(n)
    return [StudentDataset(data, s, config["gen_sino_size"], store=store["path"] if store and model_taps else None,
                           taps=model_taps, teacher_sha256=store["teacher_sha256"] if store else None,
                           augment=augment and s == "train", feature_permutation=perm.get(s),
                           atten_channel=controls_of(config)["atten_channel"]) for s in splits]


def student_task(config: dict, data, store: dict | None) -> Task:
    model = build_student(config, store)
    if config["gen_image_size"] != data.geometry.image_size:
        raise ValueError(f"config gen_image_size={config['gen_image_size']} but the dataset's images are "
                         f"{data.geometry.image_size} (geometry.image_size in {data.root}/dataset.json)")
    expected_c = data.sino_channels
    if config["gen_sino_channels"] != expected_c:
        raise ValueError(f"config gen_sino_channels={config['gen_sino_channels']} but {data.root} has "
                         f"{expected_c}-channel sinograms (sino_channels in dataset.json)")

    def step(model, batch, device):
        feats = {t: f.to(device, non_blocking=True) for t, f in batch.get("features", {}).items()}
        pred = model(batch["sino"].to(device, non_blocking=True), feats if model.plan else None)
        return pred, batch["image"].to(device, non_blocking=True)

    def preview(model, batch, device, path):
        from shared.plots import image_grid

        pred, target = step(model, batch, device)
        rows = [[batch["sino"][i, 0].numpy(), target[i, 0].cpu().numpy(), pred[i, 0].cpu().numpy()]
                for i in range(min(4, pred.shape[0]))]
        image_grid(rows, ["activity sinogram (padded)", "true activity", "student"], path,
                   shared_columns=[[0], [1, 2]], cmap="hot")

    extra = []
    if model.plan and config.get("feature_scale_trainable", True):
        extra.append({"params": model.feature_scale_parameters(), "lr_mult": config["feature_scale_lr_mult"],
                      "name": "feature_scales"})
    meta = {"direction": "SI", "data_fingerprint": data.fingerprint(), "scales": dict(data.scales),
            "plan": model.plan, "teacher_shapes": {t: list(s) for t, s in model.teacher_shapes.items()},
            "teacher_sha256": store["teacher_sha256"] if store and model.plan else None,
            "store_fingerprint": store["fingerprint"] if store and model.plan else None,
            "controls": controls_of(config), "input_scale": float(data.scales.get("actSino", 1.0)),
            "output_scale": float(data.scales.get("actMap", 1.0))}
    return Task(model=model, step=step, kind="student", meta=meta, extra_param_groups=extra, preview=preview)


def load_student(path: str | Path, device="cpu") -> InjectedGenerator:
    """A trained student from ``student.pt`` alone (eval mode, frozen), with ``.meta`` and ``.config``."""
    ckpt = ckpt_io.load(path, kind="student")
    meta = ckpt.get("meta", {})
    shapes = {t: tuple(s) for t, s in meta.get("teacher_shapes", {}).items()}
    try:
        model = InjectedGenerator(ckpt["config"], shapes, 1 if meta.get("controls", {}).get("atten_channel") else 0)
        model.load_state_dict(ckpt["model"])
    except (ValueError, RuntimeError, KeyError) as e:
        raise ckpt_io.CheckpointError(f"{path}: does not rebuild the student: {str(e).splitlines()[0]}") from None
    model.eval().requires_grad_(False).to(device)
    model.config, model.meta, model.metrics = ckpt["config"], meta, ckpt.get("metrics", {})
    model.sha256 = ckpt_io.sha256_file(path)
    return model
