"""A dataset made by an independent simulator (skimage radon, Shepp–Logan activity, ellipse μ-maps,
Poisson counts, count scale c), written in the documented folder format: data a user might bring."""
import numpy as np

from shared.data.dataset_io import write_dataset
from shared.physics.projector import ParallelGeometry


def make_independent_dataset(out, size: int = 64, c: float = 5.0, sizes=(("train", 8), ("val", 4), ("test", 4)),
                             pixel_mm: float = 3.0, seed: int = 1):
    from skimage.data import shepp_logan_phantom
    from skimage.transform import radon, resize

    theta = np.arange(size) * 180.0 / size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    base = resize(shepp_logan_phantom(), (size, size), anti_aliasing=True)
    cm = pixel_mm / 10
    arrays = {}
    for split, n in sizes:
        acts, mus, sinos = [], [], []
        for _ in range(n):
            act = np.roll(base * rng.uniform(0.5, 1.5), rng.integers(-3, 4), axis=1)
            a, b = rng.uniform(0.3, 0.42) * size, rng.uniform(0.25, 0.35) * size
            mu = 0.096 * (((xx / a) ** 2 + (yy / b) ** 2) < 1)
            mu = mu + 0.06 * ((((xx - 0.1 * size) / (0.08 * size)) ** 2 + (yy / (0.12 * size)) ** 2) < 1)
            lam = c * np.exp(-radon(mu, theta, circle=False, preserve_range=True) * cm) \
                * radon(act, theta, circle=False, preserve_range=True) * cm
            o = (lam.shape[0] - size) // 2
            sinos.append(rng.poisson(np.clip(lam[o:o + size], 0, None))[None])
            acts.append(act[None])
            mus.append(mu[None])
        arrays[split] = {"actSino": np.array(sinos, np.float32), "actMap": np.array(acts, np.float32),
                         "attenMap": np.array(mus, np.float32)}
    return write_dataset(out, ParallelGeometry(size, pixel_mm, size, size), arrays,
                         {"actSino": "counts", "actMap": "a.u.", "attenMap": "1/cm"},
                         {"actSino": 0.1, "actMap": 1.0, "attenMap": 1.0})
