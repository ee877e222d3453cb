"""The user's dictionary as they write it: their key names and values, co-flow routing, one merged dict."""
import json
import re

import pytest
import torch
from ray.tune.search.sample import Float, LogUniform

from phase2_student.train import main as student_main
from shared import checkpoint as ckpt_io
from shared.cli import run_main
from shared.config.construct_dictionaries import load_config, search_space
from shared.config.schema import ConfigError, InjectionConfig, canonical, teacher_keys
from shared.losses import var_weighted_mse
from tests.conftest import tiny_student_config


def test_user_spellings_become_the_stored_form():
    c = canonical({"batch_base2_exponent": 5, "sup_base_criterion": "VarWeightedMSE", "SI_dropout": True,
                   "IS_dropout": False, "SI_gen_final_activ": "LeakyReLU", "IS_gen_final_activ": None})
    assert c == {"batch_size": 32, "loss": "var_weighted_mse", "SI_dropout": 0.1, "IS_dropout": 0.0,
                 "SI_gen_final_activ": "leaky_relu", "IS_gen_final_activ": "none"}
    for name, canon in (("MSELoss", "mse"), ("L1Loss", "l1"), ("SmoothL1Loss", "smooth_l1")):
        assert canonical({"sup_base_criterion": name}) == {"loss": canon}
    for name in ("None", "ReLU", "ELU", "Sigmoid", "Tanh", "Softplus"):
        assert canonical({"SI_gen_final_activ": name})["SI_gen_final_activ"] == name.lower()
    same = {"batch_size": 8, "loss": "l1", "SI_dropout": 0.0, "SI_gen_final_activ": "relu"}
    assert canonical(same) == same  # canonical values pass through
    assert canonical({"batch_size": 8, "batch_base2_exponent": 3}) == {"batch_size": 8}


@pytest.mark.parametrize("bad,text", [({"batch_size": 8, "batch_base2_exponent": 5}, "disagree (2**5 = 32)"),
                                      ({"batch_base2_exponent": 2.5}, "'batch_base2_exponent'=2.5"),
                                      ({"loss": "mse", "sup_base_criterion": "L1Loss"}, "disagree"),
                                      ({"sup_base_criterion": "Huber"}, "must be one of ['MSELoss'")])
def test_conflicting_or_unknown_spellings_are_refused(bad, text):
    with pytest.raises(ConfigError, match=re.escape(text)):
        canonical(bad)


def test_var_weighted_mse_by_hand():
    pred = torch.tensor([[1.0, 4.0, 0.0, 2.0]])
    target = torch.tensor([[2.0, 2.0, 0.0, 8.0]])
    floor = 0.05 * 3.0  # 5 % of the mean |target| (12 / 4)
    expect = ((1 - 2) ** 2 / 2 + (4 - 2) ** 2 / 2 + 0 / floor + (2 - 8) ** 2 / 8) / 4
    assert var_weighted_mse(pred, target).item() == pytest.approx(expect)
    p = pred.clone().requires_grad_()
    var_weighted_mse(p, target).backward()
    assert torch.allclose(p.grad, 2 * (pred - target) / torch.tensor([[2.0, 2.0, floor, 8.0]]) / 4)


def test_feature_scale_lr_mult_samples_loguniform():
    dom = search_space("student")["feature_scale_lr_mult"]
    assert isinstance(dom, Float) and isinstance(dom.get_sampler(), LogUniform)
    assert (dom.lower, dom.upper) == (0.1, 10.0)
    assert search_space("student")["inject_routing"] == "crosswise"


def test_coflow_plan():
    cross = InjectionConfig(inject_levels=[144, 9]).plan
    co = InjectionConfig(inject_levels=[144, 9], inject_routing="coflow").plan
    assert cross == {"dec144": "enc144", "enc144": "dec144", "dec9": "enc9", "enc9": "dec9"}
    assert co == {"enc144": "enc144", "dec144": "dec144", "enc9": "enc9", "dec9": "dec9"}
    assert InjectionConfig(inject_levels=[36], inject_routing="coflow", inject_dec_to_enc=False).plan == \
        {"enc36": "enc36"}  # the toggles name the teacher's side
    with pytest.raises(ConfigError, match="'inject_routing'='sideways'"):
        InjectionConfig(inject_routing="sideways")


def test_load_config_takes_the_users_words():
    c = load_config("student", overrides={"batch_base2_exponent": 4, "sup_base_criterion": "L1Loss"})
    assert c["batch_size"] == 16 and c["loss"] == "l1" and "batch_base2_exponent" not in c


def _student(tiny_data, tiny_store, out, cfg_path, *sets):
    argv = ["--data", str(tiny_data), "--features", str(tiny_store), "--out", str(out), "--epochs", "1",
            "--config", str(cfg_path), "--val-samples", "4", "--quiet"]
    for s in sets:
        argv += ["--set", s]
    return run_main(student_main, argv)


def test_student_from_the_users_vocabulary_and_coflow(tiny_data, tiny_store, tiny_teacher, tmp_path):
    cfg = tmp_path / "student.json"
    cfg.write_text(json.dumps(tiny_student_config()))
    out = tmp_path / "vocab"
    assert _student(tiny_data, tiny_store, out, cfg, "sup_base_criterion=VarWeightedMSE", "batch_base2_exponent=2",
                    "SI_dropout=true", "SI_gen_final_activ=ELU") == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["loss"], saved["batch_size"], saved["SI_dropout"], saved["SI_gen_final_activ"]) == \
        ("var_weighted_mse", 4, 0.1, "elu")
    # the one merged dict: every IS_ key of the teacher with the teacher's values, plus SI_, SUP, DUAL
    teacher = torch.load(tiny_teacher, weights_only=True)["config"]
    student = torch.load(out / "student.pt", weights_only=True)["config"]
    assert student == saved
    is_keys = {k for k in teacher if k.startswith("IS_")}
    assert is_keys == teacher_keys() and all(student[k] == teacher[k] for k in is_keys)
    assert {"SI_gen_neck", "gen_lr", "inject_levels", "inject_routing"} <= set(student)

    co = tmp_path / "coflow"
    assert _student(tiny_data, tiny_store, co, cfg, "inject_routing=coflow") == 0
    ck = ckpt_io.load(co / "student.pt", kind="student")
    assert ck["meta"]["plan"] == {f"{s}{lv}": f"{s}{lv}" for lv in (144, 36, 9) for s in ("enc", "dec")}
    assert any(k.startswith("scales.enc144") for k in ck["model"])


def test_a_teacher_key_that_contradicts_the_store_is_refused(tiny_data, tiny_store, tmp_path, capsys):
    teacher_cfg = json.loads((tiny_store / "zarr.json").read_text())["attributes"]["teacher_config"]
    wrong = teacher_cfg["IS_gen_hidden_dim"] + 1
    cfg = tmp_path / "student.json"
    cfg.write_text(json.dumps({**tiny_student_config(), **{k: teacher_cfg[k] for k in teacher_keys()},
                               "IS_gen_hidden_dim": wrong}))
    assert _student(tiny_data, tiny_store, tmp_path / "x", cfg) == 1
    err = capsys.readouterr().err
    assert f"'IS_gen_hidden_dim'={wrong}, but the teacher of {tiny_store} was trained with" in err
    assert not (tmp_path / "x").exists()
    cfg.write_text(json.dumps(tiny_student_config()))
    assert _student(tiny_data, tiny_store, tmp_path / "y", cfg, "IS_gen_neck=wide") == 1
    assert "--set IS_gen_neck: IS_ keys describe the teacher" in capsys.readouterr().err


def test_print_config_and_search_space_files(tiny_data, tiny_store, tmp_path, capsys):
    from phase1_teacher.train import main as teacher_main

    base = ["--data", str(tiny_data), "--out", str(tmp_path / "t")]
    assert run_main(teacher_main, [*base, "--print-config", "--set", "batch_base2_exponent=5",
                                   "--set", "IS_gen_final_activ=Tanh"]) == 0
    out = capsys.readouterr().out
    printed = json.loads(out[out.index("{"):])
    assert printed["batch_size"] == 32 and printed["IS_gen_final_activ"] == "tanh"
    assert not (tmp_path / "t").exists()  # printing writes nothing
    yaml_space = tmp_path / "space.yaml"
    yaml_space.write_text("gen_lr: {loguniform: [0.0001, 0.01]}\nbatch_base2_exponent: {randint: [5, 9]}\n"
                          "IS_dropout: true\n")
    assert run_main(teacher_main, [*base, "--tune", "--print-config", "--search-space", str(yaml_space)]) == 0
    out = capsys.readouterr().out
    space = json.loads(out[out.index("{"):])
    assert space["gen_lr"] == {"loguniform": [0.0001, 0.01]} and space["batch_base2_exponent"] == {"randint": [5, 9]}
    assert "batch_size" not in space and space["IS_dropout"] is True and space["IS_gen_neck"] == {"choice": ["medium"]}
    assert run_main(teacher_main, [*base, "--search-space", str(yaml_space), "--epochs", "1"]) == 1
    assert "--search-space applies only with --tune" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"gen_lr": {"loguniform": [0.1]}}))
    assert run_main(teacher_main, [*base, "--tune", "--search-space", str(bad)]) == 1
    assert f"{bad}: gen_lr: loguniform expects [low, high]" in capsys.readouterr().err
    bad.write_text(json.dumps({"colour": {"choice": ["red"]}}))
    assert run_main(teacher_main, [*base, "--tune", "--search-space", str(bad)]) == 1
    assert "colour" in capsys.readouterr().err
