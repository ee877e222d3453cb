"""Teacher data: μ-maps (and, on request, stored attenuation sinograms) of one split.

The attenuation-sinogram target is normally not read from disk: the teacher task projects the
μ-map batch on the training device (see ``phase1_teacher.task``).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from shared.data.augment import flip_image, flip_sinogram
from shared.data.dataset_io import DataError, as_dataset


class MuMapDataset(Dataset):
    """Items: ``{"index", "mu" [1,H,W] in 1/cm, "variant"}`` plus ``"atten_sino"`` [1,R,A] if stored.

    ``augment=True`` draws one of the four Radon-symmetric flips per item (torch RNG, so the
    training loop's per-epoch seed makes it reproducible); a stored sinogram is flipped to match.
    """

    def __init__(self, data, split: str, use_stored_sino: bool = False, augment: bool = False):
        self.data = as_dataset(data)
        self.split_name = split
        self.arrays = self.data.split(split)
        if self.arrays.n == 0:
            raise DataError(f"{self.data.path(split, 'attenMap')}: split {split!r} is empty")
        if use_stored_sino and self.arrays.attenSino is None:
            raise DataError(f"{self.data.path(split, 'attenSino')}: --use-stored-sino given but the dataset "
                            "has no attenSino arrays (drop the flag to project μ-maps on the fly)")
        self.use_stored_sino, self.augment = use_stored_sino, augment

    def __len__(self):
        return self.arrays.n

    def __getitem__(self, i):
        mu = torch.from_numpy(np.array(self.arrays.attenMap[i], dtype=np.float32))
        v = int(torch.randint(4, ()).item()) if self.augment else 0
        item = {"index": i, "mu": flip_image(mu, v), "variant": v}
        if self.use_stored_sino:
            sino = torch.from_numpy(np.array(self.arrays.attenSino[i], dtype=np.float32))
            item["atten_sino"] = flip_sinogram(sino, v)
        return item

    def __getstate__(self):  # workers reopen the memory maps (the Dataset object pickles lazily)
        state = dict(self.__dict__)
        state.pop("arrays")
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.arrays = self.data.split(self.split_name)
