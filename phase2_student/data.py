"""Student data: activity sinogram (padded to S×S), activity image, and the stored teacher
features of the same sample (and flip variant).

Features are precomputed, so the only augmentation that can stay consistent with them is the
set of flips the store was exported with (``export --flips``); anything else is refused.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from feature_store import FeatureStoreDataset, StoreError
from shared.data.augment import flip_image, flip_sinogram
from shared.data.dataset_io import DataError, as_dataset
from shared.physics.projector import pad_sinogram


class StudentDataset(Dataset):
    """Items: ``{"index", "variant", "sino" [C,S,S], "image" [1,H,W], "features" {tap: [C,h,w]}}``.

    Values are multiplied by the dataset's suggested scales (``actSino``, ``actMap``) so the
    network sees O(1) numbers.  ``feature_permutation`` (a control for ablations) gives each
    sample the features of another sample.  ``atten_channel`` appends the analytic attenuation
    sinogram as an extra input channel (the "plain student with ∫μ" control).
    """

    def __init__(self, data, split: str, size: int, *, store=None, taps=(), teacher_sha256=None,
                 augment: bool = False, pad_mode: str = "sino", feature_permutation=None,
                 atten_channel: bool = False):
        self.data = as_dataset(data)
        self.split_name, self.size, self.pad_mode = split, size, pad_mode
        self.arrays = self.data.split(split)
        if self.arrays.n == 0:
            raise DataError(f"{self.data.path(split, 'actSino')}: split {split!r} is empty")
        self.taps = list(taps)
        self.features = None
        if self.taps:
            if store is None:
                raise StoreError("injection needs --features STORE (or use --inject none)")
            self.features = FeatureStoreDataset(store, split, self.taps, teacher_sha256=teacher_sha256,
                                                dataset_fingerprint=self.data.fingerprint(), n=self.arrays.n)
        self.n_variants = self.features.n_variants if self.features is not None else 4
        if augment and self.features is not None and self.n_variants == 1:
            raise StoreError(f"{store}: augmentation with precomputed features needs a store exported with "
                             f"--flips (the features must be flipped with the sinogram); re-export or drop "
                             f"--augment")
        self.augment = augment
        self.perm = None if feature_permutation is None else np.asarray(feature_permutation)
        self.atten_channel = atten_channel
        if atten_channel:
            from shared.physics.acquisition import Acquisition

            self._physics = Acquisition.of(self.data.geometry)
        self.sino_scale = float(self.data.scales.get("actSino", 1.0))
        self.image_scale = float(self.data.scales.get("actMap", 1.0))
        self.atten_scale = float(self.data.scales.get("attenSino", 1.0))

    def __len__(self):
        return self.arrays.n

    def _variant(self) -> int:
        return int(torch.randint(self.n_variants, ()).item()) if self.augment else 0

    def _item(self, i: int, v: int) -> dict:
        sino = torch.from_numpy(np.array(self.arrays.actSino[i], dtype=np.float32)) * self.sino_scale
        image = torch.from_numpy(np.array(self.arrays.actMap[i], dtype=np.float32)) * self.image_scale
        if self.atten_channel:
            mu = torch.from_numpy(np.array(self.arrays.attenMap[i : i + 1], dtype=np.float32))
            with torch.no_grad():
                sino = torch.cat([sino, self._physics.attenuation_sinogram(mu)[0] * self.atten_scale])
        item = {"index": i, "variant": v, "sino": pad_sinogram(flip_sinogram(sino, v), self.size, self.pad_mode),
                "image": flip_image(image, v)}
        return item

    def _feature_index(self, i: int) -> int:
        return int(self.perm[i]) if self.perm is not None else i

    def __getitem__(self, i):
        i = int(i)
        v = self._variant()
        item = self._item(i, v)
        if self.features is not None:
            item["features"] = self.features.get(self._feature_index(i), v)
        return item

    def __getitems__(self, indices):
        """A batch: sinograms from the memory map, features read concurrently by the store's pool."""
        variants = [self._variant() for _ in indices]
        items = [self._item(int(i), v) for i, v in zip(indices, variants)]
        if self.features is not None:
            feats = self.features.get_many([(self._feature_index(int(i)), v) for i, v in zip(indices, variants)])
            for item, f in zip(items, feats):
                item["features"] = f
        return items
