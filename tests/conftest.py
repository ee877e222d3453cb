import json
import os

import pytest
import torch

# Two cores are shared by everything: keep torch from oversubscribing them in tests.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def small_config(direction="SI", size=64, image=40, **over) -> dict:
    """A complete resolved config for tiny networks (tests only)."""
    base = json.loads(open(os.path.join(os.path.dirname(__file__), "..", "shared", "config", "tuned",
                                        "student.json" if direction == "SI" else "teacher.json")).read())
    p = direction
    base.update({"gen_sino_size": size, "gen_image_size": image, f"{p}_gen_hidden_dim": 4, f"{p}_gen_mult": 1.5,
                 f"{p}_gen_z_dim": 8})
    legacy = {"batch_size": "batch_base2_exponent", "loss": "sup_base_criterion"}  # FrozenFlow's older names
    for k, v in over.items():
        base.pop(legacy.get(k), None)
        if k == "gen_sino_channels":  # the researcher's per-direction channel key
            k = f"gen_sino_channels_{p}"
        base[k if k in base or k in legacy else f"{p}_{k}"] = v
    from shared.config.vocabulary import to_stored

    return to_stored(base)


@pytest.fixture
def cfg():
    return small_config


TINY_GEOMETRY = dict(image_size=32, pixel_mm=12.0, n_radial=48, n_angles=40)


@pytest.fixture(scope="session")
def projector_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("projector_cache")
    os.environ["FROZENFLOW_CACHE"] = str(path)  # every Projector in the tests uses a private cache
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, projector_cache):
    """A tiny synthetic dataset (32×32 images, 48×40 sinograms), made once per session."""
    from shared.data.synthetic import make_synthetic_dataset

    out = tmp_path_factory.mktemp("tiny_data")
    make_synthetic_dataset(out, 24, 8, 8, seed=0, counts=5e4, montage=False, progress=False, **TINY_GEOMETRY)
    return out


def tiny_teacher_config(**over) -> dict:
    c = small_config("IS", size=64, image=TINY_GEOMETRY["image_size"], gen_hidden_dim=8, batch_size=4, gen_lr=3e-3)
    c.update(over)
    return c


@pytest.fixture(scope="session")
def tiny_teacher(tiny_data, tmp_path_factory):
    """A 1-epoch teacher checkpoint on the tiny dataset (best.pt path)."""
    from phase1_teacher.train import main as teacher_main

    out = tmp_path_factory.mktemp("tiny_teacher")
    cfg = tmp_path_factory.mktemp("tiny_teacher_config") / "config.json"  # not inside the run folder
    cfg.write_text(json.dumps(tiny_teacher_config()))
    assert teacher_main(["--data", str(tiny_data), "--out", str(out), "--epochs", "1", "--config", str(cfg),
                         "--quiet"]) == 0
    return out / "best.pt"


@pytest.fixture(scope="session")
def tiny_store(tiny_data, tiny_teacher, tmp_path_factory):
    """The tiny teacher's features for every split (unsharded, float16)."""
    from feature_store.export import main as export_main

    store = tmp_path_factory.mktemp("stores") / "features.zarr"
    assert export_main(["--ckpt", str(tiny_teacher), "--data", str(tiny_data), "--out", str(store),
                        "--shard-size", "4", "--batch-size", "4", "--quiet"]) == 0
    return store


def tiny_student_config(**over) -> dict:
    c = small_config("SI", size=64, image=TINY_GEOMETRY["image_size"], gen_hidden_dim=8, batch_size=4, gen_lr=3e-3)
    c.update(over)
    return c
