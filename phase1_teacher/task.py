"""The teacher as a training Task: μ-map → attenuation sinogram, the target projected on the fly."""
from __future__ import annotations

import torch

from shared.config.schema import RunConfig
from shared.models import ModelSpec, load_spec
from shared.models.network import build, record
from shared.physics.acquisition import Acquisition
from shared.physics.projector import crop_sinogram, pad_sinogram
from shared.train.loop import Task
from shared.errors import InputError


class OnTheFlyTarget:
    """Attenuation sinograms A μ (∫μ dl) of a μ-map batch, on the batch's device, padded to S×S."""

    def __init__(self, physics: Acquisition, size: int, pad_mode: str = "sino"):
        self.physics, self.size, self.pad_mode = physics, size, pad_mode

    def __call__(self, mu: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return pad_sinogram(self.physics.attenuation_sinogram(mu), self.size, self.pad_mode)


def teacher_task(run: RunConfig, data, *, spec: ModelSpec | None = None, use_stored_sino: bool = False,
                 physics: Acquisition | None = None, pad_mode: str = "sino") -> Task:
    """``data`` is an opened dataset (shared.data.dataset_io.Dataset): geometry, scales, fingerprint.

    The network (``spec``, default the built-in Generator) sees the μ-map zero-padded to S×S and
    returns an S×S sinogram, of which the loss sees the real R×A block."""
    g = data.geometry
    model = build(spec or load_spec("builtin"), run.flat, "IS")
    S = model.size
    if run.image_size != g.image_size:
        raise InputError(f"config gen_image_size={run.image_size} but the dataset's images are "
                         f"{g.image_size} (geometry.image_size in {data.root}/dataset.json)")
    if g.n_radial > S or g.n_angles > S:
        raise InputError(f"config gen_sino_size={S} is smaller than the sinogram {g.n_radial}x{g.n_angles}")
    if model.out_shape != (1, S, S):
        raise InputError(f"the teacher predicts the one-plane attenuation sinogram [1, {S}, {S}], but the IS model "
                         f"outputs {list(model.out_shape)} ({run.sino_channel_key}={run.sino_channels}; the "
                         f"student's follows the data)")
    mu_scale = float(data.scales.get("attenMap", 1.0))
    sino_scale = float(data.scales.get("attenSino", 1.0))
    target_of = None if use_stored_sino else OnTheFlyTarget(physics or Acquisition.of(g), S, pad_mode)

    def step(model, batch, device):
        mu = batch["mu"].to(device, non_blocking=True)
        if use_stored_sino:
            target = pad_sinogram(batch["atten_sino"].to(device), S, pad_mode)
        else:
            with torch.autocast(mu.device.type, enabled=False):  # the physics target stays float32 under --amp
                target = target_of(mu)
        pred = model(mu * mu_scale)
        # loss and metrics on the real R×A sinogram, not on the padding
        return (crop_sinogram(pred, g.n_radial, g.n_angles),
                crop_sinogram(target, g.n_radial, g.n_angles) * sino_scale)

    def preview(model, batch, device, path):
        from shared.evaluation.plots import image_grid

        pred, target = step(model, batch, device)
        rows = [[batch["mu"][i, 0].numpy(), target[i, 0].cpu().numpy(), pred[i, 0].cpu().numpy(),
                 (pred - target)[i, 0].cpu().numpy()] for i in range(min(4, pred.shape[0]))]
        image_grid(rows, ["μ-map (1/cm)", "true atten. sinogram", "predicted", "predicted − true"], path,
                   shared_columns=[[0], [1, 2], [3]], row_labels=[f"val #{int(i)}" for i in batch["index"][:4]])

    meta = {"data_fingerprint": data.fingerprint(), "geometry": g.to_dict(), "scales": dict(data.scales),
            "pad_mode": pad_mode, "direction": "IS", "model": record(model), "input_scale": mu_scale, "target": "stored" if use_stored_sino else "projected"}
    return Task(model=model, step=step, kind="teacher", meta=meta, preview=preview,
                normalize=run.normalized_scale, normalize_output=model.spec.builtin)
