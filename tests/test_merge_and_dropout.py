"""The two merges (per-channel scales, 1×1 mixer) and scheduled feature dropout, on classes FrozenFlow did not
write (the researcher-style Generator and MONAI's UNet) and through a real training run."""
import csv
import math

import numpy as np
import pytest
import torch

from feature_store import open_store
from phase2_student.injection import build_student
from phase2_student.train import StudentOptions, fit
from shared.config.schema import ConfigError, InjectionConfig, RunConfig, check_task_config
from shared.models.network import build
from tests.conftest import tiny_student_config
from tests.test_model_contract import CASES, student_keys

LEVELS = [144, 36, 9]


def _pair(spec, config, **inj):
    """A teacher, an injecting student and the plain student holding the same class weights."""
    torch.manual_seed(0)
    teacher = build(spec, config(), "IS").eval().requires_grad_(False)
    student = build_student(RunConfig.parse(student_keys(**config(), inject_levels=LEVELS, **inj), "student"), spec,
                            teacher.tap_shapes)
    plain = build_student(RunConfig.parse(student_keys(**config(), inject_levels=[]), "student"), spec)
    plain.load_state_dict({k: v for k, v in student.state_dict().items() if k.startswith("net.")})
    _, feats = teacher.forward_taps(torch.rand(2, 1, 32, 32))
    return teacher, student, plain, feats


@pytest.mark.parametrize("spec,config", CASES, ids=["researcher", "monai"])
def test_the_mixer_is_a_1x1_conv_back_to_the_receivers_channels_and_zeroed_it_is_the_plain_student(spec, config):
    teacher, student, plain, feats = _pair(spec, config, inject_merge="mixer")
    student.eval(), plain.eval()
    assert not list(student.side) and not list(student.scales)  # the mixer replaces scales and side convolutions
    for s, t in student.plan.items():
        m, c_in = student.mixers[s], student.receiver_inputs[s][0]
        assert m.weight.shape == (c_in, c_in + teacher.tap_shapes[t][0], 1, 1)
        assert torch.equal(m.weight[:, :c_in, 0, 0], torch.eye(c_in)) and torch.all(m.bias == 0)
        bound = 0.1 / math.sqrt(m.in_channels)  # feature_scale_init × torch's default draw
        assert 0 < m.weight[:, c_in:].abs().max() <= bound
    x = torch.randn(2, 1, 64, 64)
    assert not torch.allclose(student(x, feats), plain(x))  # the features flow from the first step
    with torch.no_grad():
        for m in student.mixers.values():
            m.weight[:, m.passed:].zero_()
    assert torch.equal(student(x, feats), plain(x))
    # trained: the mixers learn (the injected block gets gradient from zero), the teacher gets nothing
    student.train()
    student(x, feats).square().mean().backward()
    assert sum(m.weight.grad[:, m.passed:].abs().sum() for m in student.mixers.values()) > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert {id(p) for p in student.feature_scale_parameters()} == {id(p) for p in student.mixers.parameters()}


def test_feature_dropout_schedule_runs_cosine_from_max_to_min():
    inj = InjectionConfig.from_flat({"feature_drop_max": 0.5, "feature_drop_min": 0.1})
    # cos²(πe/2(E−1)) is the same half-cosine written another way
    want = [0.1 + 0.4 * math.cos(math.pi * e / 8) ** 2 for e in range(5)]
    got = [inj.feature_drop_at(e, 5) for e in range(5)]
    assert got == pytest.approx(want) and got[0] == 0.5 and got[-1] == pytest.approx(0.1)
    assert InjectionConfig.from_flat({"feature_drop_max": 0.3}).feature_drop_at(0, 1) == 0.3
    for bad, match in [({"feature_drop_max": 1.5}, "feature_drop_max"), ({"feature_drop_mode": "half"}, "feature_drop_mode"),
                       ({"feature_drop_max": 0.1, "feature_drop_min": 0.2}, "feature_drop_min"),
                       ({"inject_merge": "add"}, "inject_merge")]:
        with pytest.raises(ConfigError, match=match):
            InjectionConfig.from_flat(bad)


@pytest.mark.parametrize("spec,config", CASES[:1], ids=["researcher"])
def test_all_or_none_drops_every_tap_of_a_batch_together_and_only_in_training(spec, config):
    _, student, plain, feats = _pair(spec, config, feature_drop_max=0.5, feature_drop_mode="all_or_none")
    student.feature_drop = 0.5
    x = torch.randn(2, 1, 64, 64)
    student.train(), plain.train()
    ones = {t: torch.ones_like(f) for t, f in feats.items()}  # no tap is zero unless dropped
    torch.manual_seed(1)
    dropped = []
    for _ in range(60):
        injected = student._routed(ones)
        zero = [bool(torch.all(f == 0)) for f in injected.values()]
        assert len(set(zero)) == 1  # all taps together, never some
        if not zero[0]:  # kept: exactly what evaluation injects (no 1/(1−p) rescaling)
            assert all(torch.equal(injected[s], ones[t] * student.scales[s]) for s, t in student.plan.items())
        dropped.append(zero[0])
    assert 15 <= sum(dropped) <= 45  # p = 0.5 over 60 batches (binomial: outside this 1 in 10⁴)
    # a dropped batch is the plain network; evaluation never drops
    student.feature_drop = 1.0
    assert torch.equal(student(x, feats), plain(x))
    student.eval(), plain.eval()
    assert not torch.allclose(student(x, feats), plain(x))


def test_per_channel_drops_channels_of_each_sample_independently():
    spec, config = CASES[0]
    _, student, _, feats = _pair(spec, config, feature_drop_max=0.3, feature_drop_mode="per_channel",
                                 inject_merge="mixer")
    ones = {t: torch.ones_like(f) for t, f in feats.items()}  # what is kept is then the mask itself
    student.train()
    student.feature_drop = 0.3
    torch.manual_seed(2)
    masks = []
    for _ in range(20):
        for s, g in student._routed(ones).items():
            assert set(g.unique().tolist()) <= {0.0, 1.0}
            assert torch.equal(g, g[..., :1, :1].expand_as(g))  # a channel is kept or dropped whole
            masks.append(g[:, :, 0, 0])
    kept = torch.cat([m.flatten() for m in masks])
    assert 0.6 < kept.mean() < 0.8  # 1 − p over thousands of (sample, channel) draws
    assert any(not torch.equal(m[0], m[1]) for m in masks)  # the two samples of a batch draw apart


def test_training_records_the_schedule_per_epoch_and_plain_runs_list_the_keys_unused(tiny_data, tiny_store, tmp_path):
    config = tiny_student_config(inject_levels=[36, 9], feature_drop_max=0.6, feature_drop_min=0.0,
                                 feature_drop_mode="per_channel", inject_merge="mixer")
    fit(config, tiny_data, tmp_path / "run", StudentOptions(features=str(tiny_store), epochs=3, progress=False,
                                                            val_samples=4))
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [float(r["feature_drop"]) for r in rows] == pytest.approx([0.6, 0.3, 0.0])
    assert all(float(r["mix_dec36"]) > 0 for r in rows) and "scale_dec36" not in rows[0]
    assert (tmp_path / "run" / "feature_scales.png").stat().st_size > 0
    # keys set away from their defaults that shape nothing are listed once; the defaults themselves are not
    _, unused = check_task_config(tiny_student_config(inject_levels=[], inject_merge="mixer", feature_drop_max=0.2),
                                  "student")
    assert unused == {"inject_merge": "nothing injected", "feature_drop_max": "nothing injected"}
    _, unused = check_task_config(tiny_student_config(feature_drop_mode="per_channel"), "student")
    assert unused == {"feature_drop_mode": "feature_drop_max is 0"}
    assert check_task_config(tiny_student_config(), "student")[1] == {}
    assert open_store(tiny_store).taps  # the store the run read is intact


def test_ablate_runs_the_grid_of_teachers_routing_merge_and_dropout_with_paired_tests(tiny_data, tiny_store, tmp_path):
    from phase2_student.ablate import main as ablate_main
    from phase2_student.task import load_student
    from shared.cli import run_main

    import json

    cfg = tmp_path / "student.json"
    cfg.write_text(json.dumps(tiny_student_config(SI_gen_hidden_dim=4)))
    out = tmp_path / "ablate"
    args = ["--data", str(tiny_data), "--features", f"a={tiny_store},b={tiny_store}", "--out", str(out), "--config", str(cfg),
            "--epochs", "2", "--seeds", "0,1", "--variants", "none,9", "--routing", "swapped", "--merge", "mixer",
            "--dropout", "off,0.5", "--val-samples", "4"]
    assert run_main(ablate_main, args) == 0
    run = out / "runs" / "9" / "a" / "swapped-mixer-drop0.5" / "seed1"
    student = load_student(run / "student.pt")
    assert student.meta["routing"] == "IS_coflow" and student.plan == {"enc9": "enc9", "dec9": "dec9"}
    assert list(student.mixers) and student.run.injection.feature_drop_mode == "all_or_none"
    drops = [float(r["feature_drop"]) for r in csv.DictReader(open(run / "metrics.csv"))]
    assert drops == pytest.approx([0.5, 0.0])
    assert not (out / "runs" / "none" / "a").exists()  # the axes do not apply to the plain student
    md = (out / "ablation.md").read_text()
    assert "NRMSE − plain [95 % CI]" in md and "| 9 · b · swapped · mixer · no drop (n=2)" in md
    # the paired difference: each test sample's NRMSE averaged over the seeds, minus the plain student's
    res = json.loads((out / "ablation.json").read_text())["results"]
    mine = np.mean([r["per_sample_nrmse"] for r in res["9 · a · swapped · mixer · drop 0.5"]], axis=0)
    plain = np.mean([r["per_sample_nrmse"] for r in res["none"]], axis=0)
    row = next(ln for ln in md.splitlines() if ln.startswith("| 9 · a · swapped · mixer · drop 0.5"))
    assert f"{np.mean(mine - plain):+.4f} [" in row


def test_ablate_refuses_a_dropout_mode_without_dropout(tiny_data, tmp_path, capsys):
    from phase2_student.ablate import main as ablate_main
    from shared.cli import run_main

    assert run_main(ablate_main, ["--data", str(tiny_data), "--out", str(tmp_path / "a"), "--variants", "none",
                                  "--dropout-mode", "per_channel"]) == 2
    assert "error: --dropout-mode per_channel: applies to feature dropout" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_dropout_and_merge_can_be_sampled_by_tune_and_bad_ranges_are_refused_before_ray_starts():
    from ray import tune

    from shared.config.construct_dictionaries import search_space
    from shared.train.entry import check_space

    space = {**search_space("student", cpu=True), "feature_drop_max": tune.uniform(0.0, 0.5),
             "inject_merge": tune.choice(["scale", "mixer"]), "feature_drop_mode": tune.choice(["all_or_none", "per_channel"])}
    from phase2_student.train import _one_direction_at_least as trial  # as tune-student checks its space

    check_space(space, "student", True, where="space.yaml", trial_config=trial)  # every value of every domain parses
    with pytest.raises(ConfigError, match="space.yaml: feature_drop_max can draw 1.5"):
        check_space({**space, "feature_drop_max": tune.uniform(0.0, 1.5)}, "student", True, where="space.yaml",
                    trial_config=trial)
