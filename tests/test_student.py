import csv
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from feature_store.layout import StoreError
from shared.config.schema import RunConfig
from phase2_student.evaluate import main as evaluate_main
from feature_store import open_store
from phase2_student.injection import build_student
from shared.config.schema import ConfigError, InjectionConfig, TrainConfig, parse_inject
from phase2_student.task import load_student, student_datasets, student_task
from phase2_student.train import main as student_main
from shared.cli import run_main
from shared.data.dataset_io import open_dataset
from shared.models import ModelError, load_spec
from shared.models.network import build
from shared.train.loop import build_optimizer
from tests.conftest import tiny_student_config, tiny_teacher_config

BUILTIN = load_spec("builtin")
TEACHER_SHAPES = build(BUILTIN, tiny_teacher_config(), "IS").tap_shapes


def _features(batch=2):
    return {t: torch.randn(batch, *s) for t, s in TEACHER_SHAPES.items()}


@pytest.mark.parametrize("directions", [(True, True), (True, False), (False, True)])
def test_every_level_and_direction_combination(directions):
    torch.manual_seed(0)
    plain = build(BUILTIN, tiny_student_config(), "SI")
    n_plain = sum(p.numel() for p in plain.parameters())
    for r in range(1, 4):
        for levels in itertools.combinations([144, 36, 9], r):
            c = tiny_student_config(inject_levels=list(levels), inject_enc_to_dec=directions[0],
                                    inject_dec_to_enc=directions[1])
            s = build_student(RunConfig.parse(c, "student"), BUILTIN, TEACHER_SHAPES)
            want = {**({f"dec{lv}": f"enc{lv}" for lv in levels} if directions[0] else {}),
                    **({f"enc{lv}": f"dec{lv}" for lv in levels} if directions[1] else {})}
            assert s.plan == want
            assert {st: m.in_channels for st, m in s.side.items()} == {st: TEACHER_SHAPES[tt][0] for st, tt in want.items()}
            assert s(torch.randn(2, 1, 64, 64), _features()).shape == (2, 1, 32, 32)
            n_scales = sum(TEACHER_SHAPES[t][0] for t in want.values())
            assert sum(p.numel() for p in s.feature_scale_parameters()) == n_scales
            assert sum(p.numel() for p in s.parameters()) > n_plain + n_scales


def test_scales_start_at_init_and_receive_gradients():
    s = build_student(RunConfig.parse(tiny_student_config(inject_levels=[144, 9]), "student"), BUILTIN, TEACHER_SHAPES)
    for p in s.feature_scale_parameters():
        assert torch.all(p == 0.1) and p.shape[1:] == (1, 1)
    feats = _features()
    s(torch.randn(2, 1, 64, 64), feats).square().mean().backward()
    for name, p in s.scales.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(f.grad is None and not f.requires_grad for f in feats.values())


def test_no_injection_is_exactly_the_plain_generator():
    c = tiny_student_config(inject_levels=[])
    torch.manual_seed(1)
    plain = build(BUILTIN, c, "SI")
    torch.manual_seed(1)
    student = build_student(RunConfig.parse(c, "student"), BUILTIN, TEACHER_SHAPES)
    assert list(student.state_dict()) == list(plain.state_dict())
    assert sum(p.numel() for p in student.parameters()) == sum(p.numel() for p in plain.parameters())
    x = torch.randn(2, 1, 64, 64)
    assert torch.equal(student.eval()(x), plain.eval()(x))
    with pytest.raises(ConfigError, match="inject_dec_to_enc.*at least one direction"):
        InjectionConfig.from_flat(tiny_student_config(inject_levels=[144], inject_enc_to_dec=False,
                                                      inject_dec_to_enc=False))
    assert InjectionConfig.from_flat(tiny_student_config(inject_levels=[], inject_enc_to_dec=False,
                                                         inject_dec_to_enc=False)).plan == {}
    assert parse_inject("none") == [] and parse_inject("9,144") == [144, 9]
    with pytest.raises(ValueError, match="--inject"):
        parse_inject("144,72")


def test_spatial_and_channel_mismatch_name_both_shapes():
    with pytest.raises(ModelError, match=r"teacher enc36 is 8×8 but student receiver dec36 \(decoder.2.head.0\) takes 16×16"):
        build_student(RunConfig.parse(tiny_student_config(gen_sino_size=128, inject_levels=[36]), "student"), BUILTIN,
                      {**TEACHER_SHAPES, "enc36": (8, 8, 8), "dec36": (8, 8, 8)})
    s = build_student(RunConfig.parse(tiny_student_config(inject_levels=[9]), "student"), BUILTIN, TEACHER_SHAPES)
    feats = _features()
    feats["enc9"] = torch.randn(2, TEACHER_SHAPES["enc9"][0] + 1, 2, 2)
    with pytest.raises(ValueError, match=r"features\['enc9'\] has shape"):
        s(torch.randn(2, 1, 64, 64), feats)


def test_optimizer_holds_only_student_and_scale_parameters(tiny_data, tiny_store):
    data = open_dataset(tiny_data)
    config = tiny_student_config(feature_scale_lr_mult=10.0)
    task = student_task(RunConfig.parse(config, "student"), data, open_store(tiny_store))
    opt = build_optimizer(task, TrainConfig.from_flat(config))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in task.model.parameters()}
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["feature_scales"]["lr"] == pytest.approx(10 * config["gen_lr"])
    (train_set,) = student_datasets(RunConfig.parse(config, "student"), data, open_store(tiny_store), splits=("train",))
    item = train_set[0]
    assert all(f.is_leaf and not f.requires_grad for f in item["features"].values())


def test_student_overfits_a_few_samples(tiny_data, tiny_store):
    torch.manual_seed(0)
    data = open_dataset(tiny_data)
    config = tiny_student_config(inject_levels=[144, 36, 9])
    task = student_task(RunConfig.parse(config, "student"), data, open_store(tiny_store))
    (ds,) = student_datasets(RunConfig.parse(config, "student"), data, open_store(tiny_store), splits=("train",))
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    opt = build_optimizer(task, TrainConfig.from_flat(config))
    losses = []
    for _ in range(120):
        pred, target = task.step(task.model, batch, torch.device("cpu"))
        loss = torch.nn.functional.mse_loss(pred, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_train_cli_writes_student_pt_and_evaluate_writes_reports(tiny_data, tiny_store, tmp_path):
    cfg = tmp_path / "student.json"
    cfg.write_text(json.dumps(tiny_student_config()))
    out = tmp_path / "student"
    assert run_main(student_main, ["--data", str(tiny_data), "--features", str(tiny_store), "--out", str(out),
                                   "--epochs", "2", "--config", str(cfg), "--inject", "144,9", "--quiet"]) == 0
    student = load_student(out / "student.pt")
    assert set(student.plan) == {"dec144", "enc144", "dec9", "enc9"}
    store = open_store(tiny_store)
    assert student.meta["teacher_sha256"] == store.teacher_sha256
    assert student.meta["store_fingerprint"] == store.fingerprint
    ev = tmp_path / "eval"
    assert run_main(evaluate_main, ["--student", str(out / "student.pt"), "--features", str(tiny_store), "--data",
                                    str(tiny_data), "--split", "test", "--out", str(ev)]) == 0
    summary = json.loads((ev / "summary.json").read_text())
    assert set(summary["methods"]) == {"student", "fbp", "mlem"}
    whole = {"mse", "psnr", "ssim", "ssim_global", "nrmse"}
    assert set(summary["methods"]["fbp"]) == whole | {f"masked_{k}" for k in whole - {"ssim_global"}}
    st = summary["statistics"]["mlem"]["masked_nrmse"]
    from scipy import stats

    v = np.array([float(r["masked_nrmse"]) for r in csv.DictReader(open(ev / "per_sample.csv")) if r["method"] == "mlem"])
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))  # Student t, n − 1 dof
    assert st["n"] == 8 and st["mean"] == pytest.approx(v.mean(), rel=1e-6) and st["std"] == pytest.approx(v.std(ddof=1), rel=1e-6)
    assert st["ci95"] == pytest.approx([v.mean() - half, v.mean() + half], rel=1e-6)
    assert set(summary["paired"]) == {"student - mlem"}
    assert (out / "command.txt").read_text().strip() and (out / "revision.txt").read_text().strip()
    assert (out / "feature_scales.png").stat().st_size > 5_000
    assert "scale_dec144" in (out / "metrics.csv").read_text().splitlines()[0]
    assert abs(summary["calibration"]["c"] - 1.0) < 0.05 and "fitted" in summary["calibration"]["source"]
    lesions = summary["lesions"]  # the synthetic data knows its lesions: CRC per lesion, BV
    n = sum(1 for _ in csv.DictReader(open(ev / "per_lesion.csv")))
    assert n == lesions["n"]["hot"] + lesions["n"]["cold"] > 0
    assert set(lesions["statistics"]["mlem"]) >= {"crc_hot", "bv"} and lesions["statistics"]["mlem"]["bv"]["n"] == n
    assert (ev / "crc_vs_size.png").stat().st_size > 10_000
    rows = list(csv.DictReader(open(ev / "per_sample.csv")))
    assert len(rows) == 3 * 8 and {r["method"] for r in rows} == {"student", "fbp", "mlem"}
    assert (ev / "comparison.png").stat().st_size > 10_000 and (ev / "box_plots.png").stat().st_size > 5_000
    # a plain student beside it: paired, sample by sample
    plain = tmp_path / "plain"
    assert run_main(student_main, ["--data", str(tiny_data), "--out", str(plain), "--epochs", "1", "--config",
                                   str(cfg), "--inject", "none", "--quiet"]) == 0
    assert run_main(evaluate_main, ["--student", str(out / "student.pt"), "--features", str(tiny_store), "--plain",
                                    str(plain / "student.pt"), "--data", str(tiny_data), "--methods", "student",
                                    "--out", str(tmp_path / "ev2")]) == 0
    p = json.loads((tmp_path / "ev2" / "summary.json").read_text())["paired"]["student - plain"]["nrmse"]
    # recomputed from the per-sample table: the paired difference, its t-interval and both tests
    from scipy import stats

    rows = list(csv.DictReader(open(tmp_path / "ev2" / "per_sample.csv")))
    by = {m: np.array([float(r["nrmse"]) for r in sorted((r for r in rows if r["method"] == m), key=lambda r: int(r["sample"]))])
          for m in ("student", "plain")}
    d = by["student"] - by["plain"]
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    assert p["n"] == 8 and p["mean_diff"] == pytest.approx(d.mean(), rel=1e-6)
    assert p["ci95"] == pytest.approx([d.mean() - half, d.mean() + half], rel=1e-6)
    assert p["p_t"] == pytest.approx(stats.ttest_rel(by["student"], by["plain"]).pvalue, rel=1e-6)
    assert p["p_wilcoxon"] == pytest.approx(stats.wilcoxon(by["student"], by["plain"]).pvalue, rel=1e-6)
    assert run_main(evaluate_main, ["--student", str(out / "student.pt"), "--features", str(tiny_store), "--plain",
                                    str(out / "student.pt"), "--data", str(tiny_data), "--methods", "student",
                                    "--out", str(tmp_path / "ev3")]) == 2  # --plain must be a plain student
    # the student cannot be evaluated without its store, nor with another store
    assert run_main(evaluate_main, ["--student", str(out / "student.pt"), "--data", str(tiny_data),
                                    "--out", str(tmp_path / "e2")]) == 2
    assert not (tmp_path / "e2").exists()


def test_student_process_never_builds_the_teacher(tiny_data, tiny_store, tmp_path):
    cfg = tmp_path / "student.json"
    cfg.write_text(json.dumps(tiny_student_config()))
    code = (f"import sys; from phase2_student.train import main; "
            f"main(['--data', {str(tiny_data)!r}, '--features', {str(tiny_store)!r}, '--out', {str(tmp_path / 'o')!r}, "
            f"'--epochs', '1', '--config', {str(cfg)!r}, '--quiet']); "
            f"assert 'phase1_teacher' not in sys.modules and 'shared.models.frozen' not in sys.modules, 'teacher loaded'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_augmentation_needs_a_flips_store(tiny_data, tiny_store, tiny_teacher, tmp_path):
    data = open_dataset(tiny_data)
    config = tiny_student_config(inject_levels=[36])
    with pytest.raises(StoreError, match="--flips"):
        student_datasets(RunConfig.parse(config, "student"), data, open_store(tiny_store), augment=True)
    from feature_store.export import main as export_main

    flips = tmp_path / "flips.zarr"
    assert run_main(export_main, ["--ckpt", str(tiny_teacher), "--data", str(tiny_data), "--out", str(flips),
                                  "--flips", "--quiet"]) == 0
    train_set, _ = student_datasets(RunConfig.parse(config, "student"), data, open_store(flips), augment=True)
    from shared.data.augment import flip_image

    torch.manual_seed(3)
    seen = set()
    for _ in range(12):
        item = train_set[5]
        v = item["variant"]
        seen.add(v)
        plain_image = torch.from_numpy(np.array(data.split("train").actMap[5])) * data.scales["actMap"]
        assert torch.allclose(item["image"], flip_image(plain_image, v))
        stored = train_set.features.get(5, v)["enc36"]
        assert torch.equal(item["features"]["enc36"], stored)
    assert len(seen) > 1


def test_controls_shuffle_freeze_and_atten_channel(tiny_data, tiny_store):
    data = open_dataset(tiny_data)
    store = open_store(tiny_store)
    c = tiny_student_config(inject_levels=[9], shuffle_features=True)
    (ds,) = student_datasets(RunConfig.parse(c, "student"), data, store, splits=("val",))
    assert sorted(ds.perm.tolist()) == list(range(8)) and all(ds.perm[i] != i for i in range(8))
    assert torch.equal(ds[2]["features"]["enc9"], ds.features.get(int(ds.perm[2]))["enc9"])

    frozen = student_task(RunConfig.parse(tiny_student_config(inject_levels=[9], feature_scale_init=0.0,
                                              feature_scale_trainable=False), "student"), data, store)
    assert all(not p.requires_grad and torch.all(p == 0) for p in frozen.model.feature_scale_parameters())
    assert frozen.extra_param_groups == []

    a = tiny_student_config(inject_levels=[], atten_channel=True)
    task = student_task(RunConfig.parse(a, "student"), data, None)
    (ds,) = student_datasets(RunConfig.parse(a, "student"), data, None, splits=("val",))
    item = ds[1]
    assert item["sino"].shape == (2, 64, 64) and task.model.in_channels == 2
    from shared.physics.projector import Projector, pad_sinogram

    mu = torch.from_numpy(np.array(data.split("val").attenMap[1:2]))
    expected = pad_sinogram(Projector(data.geometry).forward(mu), 64)[0, 0] * data.scales["attenSino"]
    assert torch.allclose(item["sino"][1], expected, atol=1e-5)
    assert task.model(item["sino"][None]).shape == (1, 1, 32, 32)


def test_two_trial_tune_yields_student_pt(tiny_data, tiny_store, tmp_path):
    out = tmp_path / "tune"
    pins = ["gen_sino_size=64", "gen_image_size=32", "SI_gen_hidden_dim=4", "SI_gen_z_dim=8",
            "SI_gen_mult=1.5", "SI_gen_fill=0"]
    space = tmp_path / "space.json"  # the user's own words, sampled
    space.write_text(json.dumps({"batch_base2_exponent": {"choice": [1, 2]},
                                 "sup_base_criterion": {"choice": ["MSELoss", "VarWeightedMSE"]}}))
    args = ["--data", str(tiny_data), "--features", str(tiny_store), "--out", str(out), "--tune",
            "--num-samples", "2", "--epochs", "2", "--inject", "144,36,9", "--search-space", str(space)]
    for p in pins:
        args += ["--set", p]
    assert run_main(student_main, args) == 0
    assert all(p.name.startswith("trial_") for p in (out / "ray").glob("*/*") if p.is_dir())  # short names
    best = json.loads((out / "best_config.json").read_text())
    assert best["batch_base2_exponent"] in (1, 2) and best["sup_base_criterion"] in ("MSELoss", "VarWeightedMSE")
    assert "batch_size" not in best and best["FROZEN_IS_gen_neck"]  # their words, with the frozen network's dict
    student = load_student(out / "student.pt")
    assert student.plan and student.config["gen_sino_size"] == 64
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert len(rows) == 2 and all(r["config/inject_levels"] == "[144, 36, 9]" for r in rows)
    assert all(r["config/batch_base2_exponent"] in ("1", "2") for r in rows)
    for r in rows:  # each row is the config the trial trained (its config.json), not only what Ray sampled
        trained = json.loads((out / "trials" / r["trial_id"] / "config.json").read_text())
        assert r["config/inject_enc_to_dec"] == str(trained["inject_enc_to_dec"])
        assert trained["inject_enc_to_dec"] or trained["inject_dec_to_enc"]


def test_a_trial_records_the_config_it_trained(tmp_path):
    from phase2_student.train import _one_direction_at_least
    from shared.train.tune import _trained_config

    sampled = {**tiny_student_config(), "inject_levels": [36], "inject_enc_to_dec": False, "inject_dec_to_enc": False}
    trained = _one_direction_at_least(sampled)
    assert InjectionConfig.from_flat(trained).plan == {"dec36": "enc36"}
    (tmp_path / "trials" / "t1").mkdir(parents=True)
    (tmp_path / "trials" / "t1" / "config.json").write_text(json.dumps(trained))
    result = type("Result", (), {"metrics": {"trial_id": "t1"}, "config": sampled})()
    assert _trained_config(tmp_path, result) == trained


def test_ablation_table_over_variants_and_seeds(tiny_data, tiny_store, tmp_path):
    from phase2_student.ablate import main as ablate_main

    cfg = tmp_path / "student.json"
    cfg.write_text(json.dumps(tiny_student_config(SI_gen_hidden_dim=4)))
    out = tmp_path / "ablate"
    args = ["--data", str(tiny_data), "--features", str(tiny_store), "--out", str(out), "--epochs", "1",
            "--seeds", "0,1", "--variants", "none,9,control_scales_0", "--config", str(cfg)]
    assert run_main(ablate_main, args) == 0
    md = (out / "ablation.md").read_text()
    for row in ("| none (n=2)", "| 9 (n=2)", "| control_scales_0 (n=2)", "| fbp (classical)", "| mlem (classical)"):
        assert row in md
    res = json.loads((out / "ablation.json").read_text())["results"]
    assert res["none"][0] != res["none"][1]  # seeds differ
    # frozen-zero scales: the injected channels carry nothing, so the features cannot matter
    s = load_student(out / "runs" / "control_scales_0" / "seed0" / "student.pt")
    assert all(torch.all(p == 0) for p in s.feature_scale_parameters())
    mtime = (out / "runs" / "none" / "seed0" / "result.json").stat().st_mtime_ns
    assert run_main(ablate_main, args) == 0  # rerun reuses finished runs
    assert (out / "runs" / "none" / "seed0" / "result.json").stat().st_mtime_ns == mtime
    report = args[:args.index("--variants") + 1] + ["none,36", "--report-only", *args[args.index("--config"):]]
    assert run_main(ablate_main, report) == 0  # tabulates what exists, trains nothing
    md = (out / "ablation.md").read_text()
    assert "| none (n=2)" in md and "| 36 " not in md and not (out / "runs" / "36").exists()
