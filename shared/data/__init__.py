"""Dataset folders (docs/DESIGN.md §8), sinogram-consistent augmentation and synthetic phantoms."""
from shared.data.augment import FLIP_VARIANTS, flip_image, flip_sinogram
from shared.data.dataset_io import (KINDS, DataError, Dataset, SplitArrays, open_dataset, read_meta,
                                    write_dataset)

__all__ = ["FLIP_VARIANTS", "flip_image", "flip_sinogram", "KINDS", "DataError", "Dataset", "SplitArrays", "open_dataset", "read_meta", "write_dataset",
           "make_synthetic_dataset"]


def __getattr__(name):  # lazy: an eager import makes `python -m shared.data.synthetic` warn (runpy)
    if name == "make_synthetic_dataset":
        from shared.data.synthetic import make_synthetic_dataset
        return make_synthetic_dataset
    raise AttributeError(name)
