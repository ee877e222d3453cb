"""The four teacher kinds: what each sees and predicts (against independent computations), and each one through
train-teacher → export → verify → a student, with the routing that pairs with it."""
import json

import numpy as np
import pytest
import torch

from feature_store import open_store
from feature_store.export import main as export_main
from feature_store.verify import main as verify_main
from phase1_teacher.train import main as teacher_main
from phase2_student.task import load_student
from phase2_student.train import StudentOptions, fit
from shared.config.schema import ConfigError, InjectionConfig, RunConfig
from shared.data.dataset_io import open_dataset
from shared.data.forward_check import calibration_of
from shared.data.views import TeacherKind, TeacherRows, TeacherView
from shared.evaluation.baselines import reconstruct_split
from shared.files import checkpoint as ckpt_io
from shared.physics.projector import Projector, pad_sinogram
from tests.conftest import tiny_student_config, tiny_teacher_config


def si_teacher_config() -> dict:
    """An SI network's dict without the student's injection keys (an SI teacher injects nothing)."""
    return {k: v for k, v in tiny_student_config().items() if k not in InjectionConfig.flat_keys()}


def test_each_kind_sees_and_predicts_what_it_says(tiny_data):
    data = open_dataset(tiny_data)
    s, g = data.scales, data.geometry
    idx = [1, 4]
    rows = TeacherRows(data, "val", TeacherKind("activity", "IS"))
    batch = rows.take(idx)
    split = data.split("val")
    mu = torch.from_numpy(np.array(split.attenMap[idx], dtype=np.float32))
    act, y = (torch.from_numpy(np.array(a[idx], dtype=np.float32)) for a in (split.actMap, split.actSino))
    Amu = Projector(g).forward(mu)

    def view(kind, direction):
        return TeacherView(TeacherKind(kind, direction), data, 64)

    v = view("attenuation", "SI")
    assert torch.allclose(v.input(batch, "cpu"), pad_sinogram(Amu * s["attenSino"], 64), atol=1e-5)
    assert torch.equal(v.target(batch, "cpu"), mu * s["attenMap"])
    v = view("attenuation", "IS")
    assert torch.equal(v.input(batch, "cpu"), mu * s["attenMap"])
    assert torch.allclose(v.target(batch, "cpu"), Amu * s["attenSino"], atol=1e-5)
    v = view("activity", "SI")
    assert torch.equal(v.input(batch, "cpu"), pad_sinogram(y * s["actSino"], 64))
    assert torch.equal(v.target(batch, "cpu"), act * s["actMap"])
    v = view("activity", "IS")
    c, _ = calibration_of(data, "train")
    fbp = reconstruct_split(data, "val", "fbp", calibration=c, indices=idx)  # the baselines' own path
    assert torch.allclose(v.input(batch, "cpu"), torch.from_numpy(fbp) * s["actMap"], atol=1e-4)
    assert torch.equal(v.target(batch, "cpu"), y * s["actSino"])
    # the FBP input is a reconstruction of the activity: closer to it than to a blank image
    err = float(((torch.from_numpy(fbp) - act) ** 2).mean() / (act ** 2).mean())
    assert err < 0.5, err
    with pytest.raises(ValueError, match="only an attenuation teacher reads attenSino"):
        TeacherKind("activity", "SI", stored_sino=True)


@pytest.mark.parametrize("kind,direction,routing", [("attenuation", "SI", "coflow"), ("activity", "SI", "coflow"),
                                                    ("activity", "IS", "crosswise")])
def test_each_kind_trains_exports_verifies_and_feeds_a_student(tiny_data, tmp_path, kind, direction, routing):
    cfg = tmp_path / "teacher.json"
    cfg.write_text(json.dumps(si_teacher_config() if direction == "SI" else tiny_teacher_config()))
    teacher = tmp_path / "teacher"
    assert teacher_main(["--data", str(tiny_data), "--out", str(teacher), "--epochs", "2", "--config", str(cfg),
                         "--kind", kind, "--direction", direction, "--quiet"]) == 0
    ckpt = ckpt_io.load(teacher / "best.pt", kind="teacher")
    assert ckpt["meta"]["teacher_kind"] == {"kind": kind, "direction": direction, "stored_sino": False, "recon": "fbp"}
    history = ckpt_io.load(teacher / "last.pt")["history"]
    assert history[1]["val_loss"] < history[0]["val_loss"]  # it learns its mapping
    store = tmp_path / "features.zarr"
    assert export_main(["--ckpt", str(teacher / "best.pt"), "--data", str(tiny_data), "--out", str(store),
                        "--shard-size", "8", "--quiet"]) == 0
    manifest = open_store(store)
    assert manifest.teacher_kind == TeacherKind(kind, direction)
    assert {t: s[1:] for t, s in manifest.tap_shapes.items()} == {
        "enc144": (32, 32), "enc36": (8, 8), "enc9": (2, 2), "dec9": (2, 2), "dec36": (8, 8), "dec144": (32, 32)}
    # verify recomputes samples with the live teacher from the same input the export gave it
    assert verify_main(["--features", str(store), "--ckpt", str(teacher / "best.pt"), "--data", str(tiny_data),
                        "--samples", "3", "--seed", "0"]) == 0
    out = tmp_path / "student"
    fit(tiny_student_config(inject_levels=[36, 9]), tiny_data, out,
        StudentOptions(features=str(store), epochs=1, progress=False, val_samples=4))
    stored = json.loads((out / "config.json").read_text())
    assert stored["inject_routing"] == "auto"  # the dict as given …
    meta = ckpt_io.load(out / "student.pt", kind="student")["meta"]
    assert meta["routing"] == routing and meta["teacher_kind"]["direction"] == direction  # … and what it became
    assert load_student(out / "student.pt").plan == meta["plan"]  # rebuilt with the same routing
    want = ({"enc36": "enc36", "dec36": "dec36", "enc9": "enc9", "dec9": "dec9"} if routing == "coflow"
            else {"dec36": "enc36", "enc36": "dec36", "dec9": "enc9", "enc9": "dec9"})
    assert meta["plan"] == want


def test_routing_that_pairs_with_the_other_direction_is_refused_naming_the_ablation():
    run = RunConfig.parse(tiny_student_config(inject_routing="coflow"), "student")
    with pytest.raises(ConfigError, match="pairs with an SI teacher.*use auto \\(crosswise\\) or, as an ablation, IS_coflow"):
        run.routed("IS")
    run = RunConfig.parse(tiny_student_config(inject_levels=[9], inject_routing="IS_coflow"), "student").routed("IS")
    assert run.injection.plan == {"enc9": "enc9", "dec9": "dec9"}
    with pytest.raises(ConfigError, match="as an ablation, SI_crosswise"):
        RunConfig.parse(tiny_student_config(inject_routing="crosswise"), "student").routed("SI")
    auto = RunConfig.parse(tiny_student_config(inject_levels=[9]), "student")
    assert auto.routed("SI").injection.plan == {"enc9": "enc9", "dec9": "dec9"}
    assert auto.routed("IS").injection.plan == {"dec9": "enc9", "enc9": "dec9"}
