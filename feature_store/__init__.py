"""The feature store: export the frozen teacher's taps once, verify them, stream them (docs/DESIGN.md §5).

Callers outside this package use only this interface: ``open_store`` (the manifest),
``FeatureStoreDataset`` (the reader) and ``StoreError``; Zarr stays inside.
"""
from .layout import StoreError
from .manifest import SplitState, StoreManifest, open_store
from .reader import FeatureStoreDataset

__all__ = ["open_store", "StoreManifest", "SplitState", "FeatureStoreDataset", "StoreError"]
