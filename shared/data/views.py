"""What a teacher sees of a sample and what it learns to predict: the four teacher kinds (docs/DESIGN.md §3).

=============  =========  ======================================================  =====================
kind           direction  input → target                                          routing that pairs
=============  =========  ======================================================  =====================
attenuation    IS         μ-map → attenuation sinogram A μ                        crosswise
attenuation    SI         attenuation sinogram A μ → μ-map                        coflow
activity       SI         activity sinogram → activity image                      coflow
activity       IS         reconstruction (FBP here, or the data's recon1/2) → sino crosswise
=============  =========  ======================================================  =====================

A μ is projected on the batch's device from the μ-map (``Acquisition.attenuation_sinogram``), or read
from the dataset's ``attenSino`` with ``stored_sino``. The reconstruction is the attenuation-corrected
FBP of the centre sinogram plane with the baselines' default settings (``recon.FBP_DEFAULTS``), computed
here with the dataset's count calibration c (``forward_check.calibration_of``), so it is in actMap units;
with ``recon="recon1"``/``"recon2"`` it is the reconstruction shipped with the data instead. Everything is
in network units (the dataset's suggested scales, ``dataset.json`` ``scales``), sinograms padded to the
working size S.

One definition serves the teacher's training, the feature export and ``verify``'s recomputation: the
features a student reads are the features of exactly this input.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from shared.data.augment import flip_image, flip_sinogram
from shared.data.dataset_io import DataError, read_rows
from shared.errors import InputError
from shared.physics.projector import crop_sinogram, pad_sinogram

KINDS = ("attenuation", "activity")
RECONS = ("fbp", "recon1", "recon2")
DIRECTIONS = ("IS", "SI")


@dataclasses.dataclass(frozen=True)
class TeacherKind:
    """Which frozen network: ``kind`` (what data it was trained on) and ``direction`` (IS: image → sinogram,
    SI: sinogram → image). ``stored_sino``: attenuation kinds take A μ from ``attenSino`` instead of
    projecting the μ-map; ``recon``: the activity IS teacher's input image, ``fbp`` (computed here) or the
    dataset's own ``recon1``/``recon2``."""

    kind: str = "attenuation"
    direction: str = "IS"
    stored_sino: bool = False
    recon: str = "fbp"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"teacher kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.direction not in DIRECTIONS:
            raise InputError(f"teacher direction must be one of {list(DIRECTIONS)}, got {self.direction!r}")
        if self.stored_sino and self.kind != "attenuation":
            raise InputError("--use-stored-sino: only an attenuation teacher reads attenSino (an activity teacher "
                             "reads actSino)")
        if self.recon not in RECONS:
            raise InputError(f"--recon must be one of {list(RECONS)}, got {self.recon!r}")
        if self.recon != "fbp" and (self.kind, self.direction) != ("activity", "IS"):
            raise InputError(f"--recon {self.recon}: only the activity IS teacher reads a reconstruction")

    @classmethod
    def of(cls, record: dict | None) -> "TeacherKind":
        """From a checkpoint's or store's record; one made before teacher kinds is today's default."""
        record = record or {}
        return cls(record.get("kind", "attenuation"), record.get("direction", "IS"),
                   bool(record.get("stored_sino", False)), record.get("recon", "fbp"))

    @classmethod
    def of_checkpoint(cls, meta: dict) -> "TeacherKind":
        """A teacher checkpoint's kind (``meta["teacher_kind"]``; before kinds existed: attenuation IS, its
        target ``stored`` or ``projected``)."""
        return cls.of(meta.get("teacher_kind") or {"stored_sino": meta.get("target") == "stored"})

    def record(self) -> dict:
        return {"kind": self.kind, "direction": self.direction, "stored_sino": self.stored_sino, "recon": self.recon}

    @property
    def name(self) -> str:
        return f"{self.kind} {self.direction}"

    @property
    def fields(self) -> tuple[str, ...]:
        """The dataset arrays a batch needs."""
        if self.kind == "attenuation":
            return ("attenMap", "attenSino") if self.stored_sino else ("attenMap",)
        if self.direction == "IS" and self.recon != "fbp":
            return ("actSino", self.recon)
        return ("actSino", "actMap", "attenMap")  # the FBP input needs μ

    @property
    def sides(self) -> tuple[str, str]:
        """(what it sees, what it predicts), as the log and the figures name them."""
        sino = f"{self.kind} sinogram"
        image = {"attenuation": "μ-map", "activity": "activity image"}[self.kind]
        if (self.kind, self.direction) == ("activity", "IS"):  # it sees a reconstruction, not the truth
            image = f"{'FBP' if self.recon == 'fbp' else self.recon} image"
        return (sino, image) if self.direction == "SI" else (image, sino)

    def describe(self) -> str:
        return " → ".join(self.sides)


def _flip(field: str):
    """How an array of ``field`` follows a Radon-symmetric flip: sinograms as sinograms, the rest as images."""
    return flip_sinogram if "Sino" in field else flip_image


class TeacherRows(torch.utils.data.Dataset):
    """The raw rows of one split a teacher kind needs: items ``{"index", "variant", field: tensor}``.
    ``augment`` draws one of the four Radon-symmetric flips per item (images and sinograms alike)."""

    def __init__(self, data, split: str, kind: TeacherKind, augment: bool = False):
        from shared.data.dataset_io import as_dataset

        self.data, self.split_name, self.kind, self.augment = as_dataset(data), split, kind, augment
        arrays = self.data.split(split)
        if arrays.n == 0:
            raise DataError(f"{self.data.path(split, kind.fields[0])}: split {split!r} is empty")
        for f in kind.fields:
            if getattr(arrays, f, None) is None:
                why = "drop --use-stored-sino to project the μ-maps" if f == "attenSino" else "it is required"
                raise DataError(f"{self.data.path(split, f)}: a {kind.name} teacher reads {f}, which the dataset "
                                f"does not have ({why})")
        self.n = arrays.n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        i = int(i)
        arrays = self.data.split(self.split_name)
        v = int(torch.randint(4, ()).item()) if self.augment else 0
        item = {"index": i, "variant": v}
        for f in self.kind.fields:
            item[f] = _flip(f)(torch.from_numpy(np.array(getattr(arrays, f)[i], dtype=np.float32)), v)
        return item

    def take(self, indices, variant: int = 0) -> dict[str, torch.Tensor]:
        """Rows ``indices`` as a batch, as flip ``variant``."""
        arrays = self.data.split(self.split_name)
        return {f: _flip(f)(torch.from_numpy(np.array(getattr(arrays, f)[list(indices)], dtype=np.float32)), variant)
                for f in self.kind.fields}

    def read(self, s0: int, s1: int, variants: int = 1) -> dict[str, torch.Tensor]:
        """Rows ``s0:s1`` as a batch (plain file reads; the export's path), each repeated as its ``variants``
        flips, sample-major."""
        arrays = self.data.split(self.split_name)
        out = {}
        for f in self.kind.fields:
            x = torch.from_numpy(read_rows(getattr(arrays, f), s0, s1).astype(np.float32, copy=False))
            if variants > 1:
                x = torch.stack([_flip(f)(x, v) for v in range(variants)], dim=1).flatten(0, 1)
            out[f] = x
        return out


class TeacherView:
    """A teacher kind's input and target of a batch of ``TeacherRows`` items, on the batch's device."""

    @classmethod
    def of_teacher(cls, teacher, data) -> "TeacherView":
        """The view a trained (frozen) teacher was trained with, over ``data``: its kind, working size, padding,
        scales and calibration as its checkpoint records them."""
        meta = teacher.meta
        return cls(TeacherKind.of_checkpoint(meta), data, teacher.size, meta.get("pad_mode", "sino"),
                   calibration=meta.get("calibration"), scales=meta.get("scales"))

    def __init__(self, kind: TeacherKind, data, size: int, pad_mode: str = "sino", physics=None,
                 calibration: float | None = None, scales: dict | None = None):
        """``scales`` and ``calibration``: the ones the teacher was trained with (its checkpoint's record) when
        it runs over data it was not trained on; by default the dataset's own."""
        from shared.physics.acquisition import Acquisition

        self.kind, self.data, self.size, self.pad_mode = kind, data, int(size), pad_mode
        g = self.geometry = data.geometry
        if g.n_radial > self.size or g.n_angles > self.size:
            raise InputError(f"config gen_sino_size={self.size} is smaller than the sinogram {g.n_radial}x{g.n_angles}")
        if (kind.kind, kind.direction, kind.recon) == ("activity", "IS", "fbp") and calibration is None and physics is None:
            from shared.data.forward_check import calibration_of

            calibration, _ = calibration_of(data, "train")
        self.physics = physics or Acquisition.of(g, calibration or 1.0)
        s = data.scales if scales is None else scales
        self.mu_scale, self.atten_scale = float(s.get("attenMap", 1.0)), float(s.get("attenSino", 1.0))
        self.sino_scale, self.image_scale = float(s.get("actSino", 1.0)), float(s.get("actMap", 1.0))

    @property
    def input_scale(self) -> float:
        """The factor of the network input's raw array (recorded in the checkpoint)."""
        k = self.kind
        if k.kind == "attenuation":
            return self.mu_scale if k.direction == "IS" else self.atten_scale
        return self.sino_scale if k.direction == "SI" else self.image_scale

    def _atten_sino(self, batch, device) -> torch.Tensor:
        if self.kind.stored_sino:
            return batch["attenSino"].to(device, non_blocking=True)
        with torch.no_grad(), torch.autocast(device.type, enabled=False):  # the physics stays float32
            return self.physics.attenuation_sinogram(batch["attenMap"].to(device, non_blocking=True))

    def _fbp(self, batch, device) -> torch.Tensor:
        from shared.physics.recon import FBP_DEFAULTS, fbp

        c = self.data.sino_channels // 2  # the centre plane, as the baselines reconstruct
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            return fbp(batch["actSino"][:, c:c + 1].to(device), batch["attenMap"].to(device), self.physics,
                       **FBP_DEFAULTS)

    def input(self, batch: dict, device) -> torch.Tensor:
        """The network's input [B, C, ·, ·] in network units (sinograms padded to S×S)."""
        device = torch.device(device)
        k = self.kind
        if k.kind == "attenuation":
            if k.direction == "IS":
                return batch["attenMap"].to(device, non_blocking=True) * self.mu_scale
            return pad_sinogram(self._atten_sino(batch, device) * self.atten_scale, self.size, self.pad_mode)
        if k.direction == "SI":
            return pad_sinogram(batch["actSino"].to(device, non_blocking=True) * self.sino_scale, self.size,
                                self.pad_mode)
        if k.recon != "fbp":  # the data's own reconstruction, in actMap's units
            return batch[k.recon].to(device, non_blocking=True) * self.image_scale
        return self._fbp(batch, device) * self.image_scale

    def target(self, batch: dict, device) -> torch.Tensor:
        """What the loss compares with: an image, or the real R×A block of a sinogram, in network units."""
        device = torch.device(device)
        k = self.kind
        if k.kind == "attenuation":
            if k.direction == "IS":
                return self._atten_sino(batch, device) * self.atten_scale
            return batch["attenMap"].to(device, non_blocking=True) * self.mu_scale
        if k.direction == "SI":
            return batch["actMap"].to(device, non_blocking=True) * self.image_scale
        return batch["actSino"].to(device, non_blocking=True) * self.sino_scale

    def region(self, pred: torch.Tensor) -> torch.Tensor:
        """The part of the network's output the loss sees (an IS network's S×S sinogram → its R×A block)."""
        g = self.geometry
        return crop_sinogram(pred, g.n_radial, g.n_angles) if self.kind.direction == "IS" else pred

    @property
    def sino_channels(self) -> int:
        """Planes of the kind's sinogram side (images have one): A μ has one, activity sinograms the data's."""
        return 1 if self.kind.kind == "attenuation" else int(self.data.sino_channels)

    @property
    def input_channels(self) -> int:
        return self.sino_channels if self.kind.direction == "SI" else 1

    @property
    def output_channels(self) -> int:
        return self.sino_channels if self.kind.direction == "IS" else 1
