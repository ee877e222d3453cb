"""The teacher as a training Task, for each teacher kind (shared/data/views.py): today's attenuation IS
(μ-map → attenuation sinogram, the target projected on the fly), attenuation SI, activity SI and IS."""
from __future__ import annotations

from shared.config.schema import RunConfig
from shared.data.views import TeacherKind, TeacherView
from shared.models import ModelSpec, load_spec
from shared.models.network import build, record
from shared.physics.projector import crop_sinogram
from shared.train.loop import Task
from shared.errors import InputError


def teacher_task(run: RunConfig, data, *, spec: ModelSpec | None = None, kind: TeacherKind | None = None,
                 physics=None, pad_mode: str = "sino") -> Task:
    """``data`` is an opened dataset (shared.data.dataset_io.Dataset): geometry, scales, fingerprint.

    The network (``spec``, default the built-in Generator) is built in the kind's direction; an IS network
    sees its image zero-padded to S×S and returns an S×S sinogram, of which the loss sees the real R×A
    block; an SI network sees the sinogram padded to S×S and returns the image."""
    kind = kind or TeacherKind()
    if run.direction != kind.direction:
        raise InputError(f"a {kind.name} teacher needs a {kind.direction} config, got a {run.direction} one")
    g = data.geometry
    if run.image_size != g.image_size:
        raise InputError(f"config gen_image_size={run.image_size} but the dataset's images are "
                         f"{g.image_size} (geometry.image_size in {data.root}/dataset.json)")
    view = TeacherView(kind, data, run.sino_size, pad_mode, physics)
    if kind.direction == "SI" and run.sino_channels != view.input_channels:
        raise InputError(f"a {kind.name} teacher reads {view.input_channels}-plane sinograms but config "
                         f"{run.sino_channel_key}={run.sino_channels}")
    model = build(spec or load_spec("builtin"), run.flat, kind.direction)
    S = model.size
    if kind.direction == "IS" and model.out_shape != (view.output_channels, S, S):
        raise InputError(f"the {kind.name} teacher predicts the {view.output_channels}-plane sinogram "
                         f"[{view.output_channels}, {S}, {S}], but the IS model outputs {list(model.out_shape)} "
                         f"({run.sino_channel_key}={run.sino_channels})")

    def step(model, batch, device):
        pred = model(view.input(batch, device))
        return view.region(pred), view.target(batch, device)  # loss and metrics on the real data, not the padding

    def preview(model, batch, device, path):
        from shared.evaluation.plots import image_grid

        x, (pred, target) = view.input(batch, device), step(model, batch, device)
        x = crop_sinogram(x, g.n_radial, g.n_angles) if kind.direction == "SI" else x
        shown = [t.cpu().numpy() for t in (x, target, pred, pred - target)]
        rows = [[a[i, 0] for a in shown] for i in range(min(4, pred.shape[0]))]
        src, dst = kind.sides
        image_grid(rows, [src, f"true {dst}", "predicted", "predicted − true"], path,
                   shared_columns=[[0], [1, 2], [3]], row_labels=[f"val #{int(i)}" for i in batch["index"][:4]])

    meta = {"data_fingerprint": data.fingerprint(), "geometry": g.to_dict(), "scales": dict(data.scales),
            "pad_mode": pad_mode, "direction": kind.direction, "teacher_kind": kind.record(), "model": record(model),
            "input_scale": view.input_scale, "target": "stored" if kind.stored_sino else "projected",
            "calibration": view.physics.calibration}
    return Task(model=model, step=step, kind="teacher", meta=meta, preview=preview,
                normalize=run.normalized_scale, normalize_output=model.spec.builtin)
