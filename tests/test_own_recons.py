"""The data's own reconstructions (``{split}-recon1.npy`` / ``recon2``, e.g. the vendor's OSEM) as extra methods."""
import json
import shutil

import numpy as np
import pytest

from phase2_student.evaluate import evaluate
from phase2_student.train import StudentOptions, fit
from shared.data.dataset_io import DataError, open_dataset
from tests.conftest import tiny_student_config


def _with_recons(tiny_data, folder, names=None, units=None, **files):
    """A copy of the tiny dataset with reconstruction arrays {kind: {split: array}} and dataset.json entries."""
    shutil.copytree(tiny_data, folder)
    meta = json.loads((folder / "dataset.json").read_text())
    for kind, per_split in files.items():
        for split, arr in per_split.items():
            np.save(folder / meta.get("files", {}).get(kind, f"{{split}}-{kind}.npy").format(split=split), arr)
    if names is not None:
        meta["names"] = names
    if units is not None:
        meta["units"].update(units)
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def plain_student(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("plain_for_recons")
    fit(tiny_student_config(inject_levels=[]), tiny_data, out / "run", StudentOptions(epochs=1, progress=False,
                                                                                   val_samples=4))
    return out / "run" / "student.pt"


def test_own_reconstructions_are_methods_with_the_same_metrics_tests_and_figures(tiny_data, plain_student, tmp_path):
    data = open_dataset(tiny_data)
    rng = np.random.default_rng(3)
    recon1 = {s: (np.asarray(data.split(s).actMap) * 0.9
                  + rng.normal(0, 0.05, data.split(s).actMap.shape)).astype(np.float32) for s in data.splits}
    folder = _with_recons(tiny_data, tmp_path / "data", names={"recon1": "vendor OSEM"}, recon1=recon1)
    mine = open_dataset(folder)
    assert mine.recons == {"recon1": "vendor OSEM"} and "recon1='vendor OSEM'" in repr(mine)
    summary = evaluate(plain_student, mine, "test", tmp_path / "eval", methods=None, baseline_split=None)
    assert set(summary["methods"]) == {"student", "fbp", "mlem", "recon1"}
    assert summary["method_names"]["recon1"] == "vendor OSEM"
    t, r = np.asarray(mine.split("test").actMap, np.float64), recon1["test"].astype(np.float64)
    want = np.mean(np.linalg.norm((r - t).reshape(len(t), -1), axis=1) / np.linalg.norm(t.reshape(len(t), -1), axis=1))
    assert summary["methods"]["recon1"]["nrmse"] == pytest.approx(want, rel=1e-9)
    assert summary["statistics"]["recon1"]["nrmse"]["n"] == len(t)
    assert "student - recon1" in summary["paired"] and summary["paired"]["student - recon1"]["nrmse"]["n"] == len(t)
    assert summary["lesions"]["statistics"]["recon1"]  # per-lesion CRC and BV too
    rows = (tmp_path / "eval" / "per_sample.csv").read_text().splitlines()
    assert sum(",recon1," in row for row in rows) == len(t)
    for fig in ("comparison.png", "box_plots.png", "crc_vs_size.png"):
        assert (tmp_path / "eval" / fig).stat().st_size > 0
    # a dataset without them is unchanged
    plain = evaluate(plain_student, data, "test", tmp_path / "eval0", methods=None, baseline_split=None)
    assert set(plain["methods"]) == {"student", "fbp", "mlem"} and not any("recon" in k for k in plain["paired"])


def test_reconstructions_in_other_units_or_named_without_files_are_refused(tiny_data, tmp_path):
    data = open_dataset(tiny_data)
    arr = {s: np.asarray(data.split(s).actMap) for s in data.splits}
    folder = _with_recons(tiny_data, tmp_path / "units", units={"recon1": "counts"}, recon1=arr)
    with pytest.raises(DataError, match="units.recon1='counts' but units.actMap=.*store it in actMap's units"):
        open_dataset(folder)
    folder = _with_recons(tiny_data, tmp_path / "names", names={"recon2": "vendor OSEM"}, recon1=arr)
    with pytest.raises(DataError, match="names.recon2 given but there are no recon2 files"):
        open_dataset(folder)
    folder = _with_recons(tiny_data, tmp_path / "some", recon1={"train": arr["train"], "val": arr["val"]})
    with pytest.raises(DataError, match="test-recon1.npy: missing, but other splits have recon1"):
        open_dataset(folder)


def test_the_activity_is_teacher_can_take_the_datas_own_reconstruction_as_input(tiny_data, tmp_path):
    import torch

    from shared.data.views import TeacherKind, TeacherRows, TeacherView

    data = open_dataset(tiny_data)
    recon = {s: np.asarray(data.split(s).actMap) * 0.5 for s in data.splits}
    mine = open_dataset(_with_recons(tiny_data, tmp_path / "data", recon2=recon))
    kind = TeacherKind("activity", "IS", recon="recon2")
    batch = TeacherRows(mine, "val", kind).take([0, 3])
    x = TeacherView(kind, mine, 64).input(batch, "cpu")
    assert torch.equal(x, torch.from_numpy(recon["val"][[0, 3]]) * mine.scales["actMap"])
    with pytest.raises(DataError, match="reads recon1, which the dataset does not have"):
        TeacherRows(mine, "val", TeacherKind("activity", "IS", recon="recon1"))
    with pytest.raises(ValueError, match="only the activity IS teacher reads a reconstruction"):
        TeacherKind("activity", "SI", recon="recon1")
