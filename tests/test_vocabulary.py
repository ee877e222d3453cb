"""The researcher's dictionary exactly as their code reads it (#24): a dozen dicts of the shape their Ray
Tune runs write — string booleans, both scale keys, skip_mode conv, -1 statistics keys, GAN placeholders,
per-direction channel keys, the frozen network's whole dict under FROZEN_ — each trains for one epoch,
with what does not apply listed once; what FrozenFlow does not do is refused naming the key."""
import json
import re

import pytest
import torch

from phase1_teacher.train import main as teacher_main
from phase2_student.train import main as student_main
from shared.files import checkpoint as ckpt_io
from shared.cli import run_main
from shared.config.construct_dictionaries import load_config, merge_frozen
from shared.config.schema import ConfigError, GeneratorConfig, check_task_config
from shared.config.vocabulary import classify, to_stored
from shared.models.generator import Generator
from shared.train.losses import var_weighted_mse

TINY = {"gen_sino_size": 64, "gen_image_size": 32, "gen_image_channels": 1}
GAN = {f"{d}_disc_{k}": 1 for d in ("SI", "IS") for k in ("hidden_dim", "patchGAN", "lr", "b1", "b2", "adv_criterion")}
STATS = {"SI_stats_criterion": -1, "SI_alpha_min": -1, "SI_half_life_examples": -1, "SI_moment_1_fraction": -1}


def act_dict(**over) -> dict:
    """The issue's ACT record, at test sizes (hidden 4, z_dim 8, batch 2^2)."""
    d = {"network_type": "ACT", "train_SI": True, **TINY, "gen_sino_channels_SI": 1, "gen_sino_channels_IS": 1,
         "SI_gen_neck": "narrow", "SI_gen_z_dim": 8, "SI_gen_hidden_dim": 4, "SI_gen_mult": 1.10, "SI_gen_fill": 2,
         "SI_layer_norm": "group", "SI_pad_mode": "zeros", "SI_dropout": "true", "SI_skip_mode": "conv",
         "SI_exp_kernel": 4, "SI_gen_final_activ": "Sigmoid", "SI_normalize": "false", "SI_fixedScale": 1,
         "SI_learnedScale_init": 5.41, "SI_output_scale_lr_mult": 3.6, **STATS, **GAN,
         "batch_base2_exponent": 2, "gen_lr": 0.0085, "gen_b1": 0.20, "gen_b2": 0.27, "sup_base_criterion": "MSELoss"}
    d.update(over)
    return d


def atten_dict(**over) -> dict:
    """A frozen network's (attenuation, IS) record of theirs."""
    d = {"network_type": "ATTEN", "train_SI": False, **TINY, "gen_sino_channels_IS": 1, "IS_gen_neck": "medium",
         "IS_gen_z_dim": 8, "IS_gen_hidden_dim": 4, "IS_gen_mult": 1.5, "IS_gen_fill": 0, "IS_layer_norm": "instance",
         "IS_pad_mode": "replicate", "IS_dropout": False, "IS_skip_mode": "add", "IS_exp_kernel": 3,
         "IS_gen_final_activ": None, "IS_normalize": False, "IS_fixedScale": 1, "IS_learnedScale_init": 0.66,
         "IS_output_scale_lr_mult": 1.14, "IS_stats_criterion": -1, "IS_alpha_min": -1, **GAN,
         "batch_base2_exponent": 2, "gen_lr": 0.004, "gen_b1": 0.63, "gen_b2": 0.48, "sup_base_criterion": "L1Loss"}
    d.update(over)
    return d


STUDENTS = {
    "ACT as in the issue": act_dict(),
    "string booleans, normalize true: fixedScale wins": act_dict(SI_normalize="true", SI_fixedScale=2.0,
                                                                 SI_dropout="false"),
    "skip conv, LeakyReLU, replicate, batch norm": act_dict(SI_gen_final_activ="LeakyReLU", SI_pad_mode="replicate",
                                                          SI_layer_norm="batch", SI_gen_neck="medium"),
    "older single gen_sino_channels, None activation": {
        **{k: v for k, v in act_dict(SI_gen_final_activ=None).items() if not k.startswith("gen_sino_channels_")},
        "gen_sino_channels": 1},
    "VarWeightedMSE, wide neck, concat, ELU": act_dict(sup_base_criterion="VarWeightedMSE", SI_gen_neck="wide",
                                                        SI_skip_mode="concat", SI_gen_final_activ="ELU"),
    "older stats keys of theirs (sup_*, None)": act_dict(sup_stats_criterion=None, sup_alpha_min=0.2,
                                                          sup_half_life_examples=2000, frozen_variant="RECON_SINO",
                                                          recon_variant=1),
}
TEACHERS = {
    "ATTEN with GAN placeholders and -1 stats": atten_dict(),
    "dropout true, ELU, normalize true, VarWeightedMSE": atten_dict(IS_dropout=True, IS_gen_final_activ="ELU",
                                                                     IS_normalize="True", IS_fixedScale=3.0,
                                                                     sup_base_criterion="VarWeightedMSE"),
    "skip conv, Tanh, group norm": atten_dict(IS_skip_mode="conv", IS_gen_final_activ="Tanh", IS_layer_norm="group"),
}


def _write(tmp_path, name, d):
    path = tmp_path / f"{re.sub(r'[^a-z]+', '_', name.lower())}.json"
    path.write_text(json.dumps(d))
    return path


def _args(tiny_data, out, cfg, *extra):
    return ["--data", str(tiny_data), "--out", str(out), "--epochs", "1", "--config", str(cfg), "--val-samples", "4",
            *extra]


@pytest.mark.parametrize("name", list(TEACHERS))
def test_their_teacher_dicts_train_and_list_what_is_not_used(name, tiny_data, tmp_path, capsys):
    d = TEACHERS[name]
    out = tmp_path / "t"
    assert run_main(teacher_main, _args(tiny_data, out, _write(tmp_path, name, d))) == 0
    printed = capsys.readouterr().out
    line = next(ln for ln in printed.splitlines() if "not used by this run" in ln)
    assert "IS_disc_*, SI_disc_* (GAN only)" in line and "network_type (ATTEN" in line
    assert "IS_stats_criterion" in line and "stats loss off" in line
    saved = json.loads((out / "config.json").read_text())
    assert saved == d  # their dict, their words and values, as given
    assert ckpt_io.load(out / "best.pt")["config"] == d
    history = ckpt_io.load(out / "last.pt")["history"]
    assert len(history) == 1 and torch.isfinite(torch.tensor(history[0]["train_loss"]))


@pytest.mark.parametrize("name", list(STUDENTS))
def test_their_student_dicts_train_with_the_frozen_network_and_list_what_is_not_used(name, tiny_data, tiny_store,
                                                                                     tmp_path, capsys):
    d = STUDENTS[name]
    out = tmp_path / "s"
    assert run_main(student_main, _args(tiny_data, out, _write(tmp_path, name, d), "--features", str(tiny_store))) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "not used by this run" in ln)
    assert "IS_disc_*, SI_disc_* (GAN only)" in line and "SI_stats_criterion" in line
    saved = json.loads((out / "config.json").read_text())
    assert {k: saved[k] for k in d} == d  # their keys and values kept as written …
    teacher = json.loads((tiny_store / "zarr.json").read_text())["attributes"]["teacher_config"]
    assert {k[len("FROZEN_"):]: v for k, v in saved.items() if k.startswith("FROZEN_")} == to_stored(teacher)
    assert set(saved) == set(d) | {f"FROZEN_{k}" for k in to_stored(teacher)}  # … plus the frozen dict, nothing else
    assert ckpt_io.load(out / "student.pt")["config"] == saved


def test_their_meanings_in_the_built_in_generator():
    c = GeneratorConfig.from_flat(act_dict(), "SI")
    assert c.dropout_rate == (0.5, True) and c.scale_rule == ("learned", "learnedScale_init")
    g = Generator(act_dict(), "SI")
    drops = [m for m in g.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(m.p == 0.5 and type(m) is torch.nn.Dropout for m in drops)  # element-wise, p = 0.5
    assert isinstance(g.final_activation, torch.nn.Sigmoid) and g.skip_convs is not None
    assert abs(g.output_scale().item() - 5.41) < 1e-5 and g.param_groups()[0]["lr_mult"] == 3.6
    leaky = Generator(act_dict(SI_gen_final_activ="LeakyReLU"), "SI").final_activation
    assert leaky.negative_slope == 0.01  # torch's default, as their nn.LeakyReLU()
    assert Generator(act_dict(SI_gen_final_activ="leaky_relu"), "SI").final_activation.negative_slope == 0.2  # older
    assert not [m for m in Generator(act_dict(SI_dropout="false"), "SI").modules() if isinstance(m, torch.nn.Dropout)]
    legacy = [m for m in Generator(act_dict(SI_dropout=0.1), "SI").modules() if isinstance(m, torch.nn.Dropout2d)]
    assert legacy and legacy[0].p == 0.1  # FrozenFlow's older numeric rate keeps its meaning
    assert check_task_config(act_dict(), "student")[1]["SI_fixedScale"].startswith("SI_normalize is false")


def test_their_var_weighted_mse_by_hand():
    pred = torch.tensor([[1.0, 4.0, 0.5, 2.0]])
    target = torch.tensor([[2.0, 2.0, 0.0, 8.0]])
    eps = 1e-8
    expect = ((1 - 2) ** 2 / (2 + eps) + (4 - 2) ** 2 / (2 + eps) + 0.5 ** 2 / eps + (2 - 8) ** 2 / (8 + eps)) / 4
    assert var_weighted_mse(pred, target).item() == pytest.approx(expect, rel=1e-6)


@pytest.mark.parametrize("key,value,text", [
    ("SI_stats_criterion", "PatchwiseMomentLoss", "'SI_stats_criterion'='PatchwiseMomentLoss': a statistics"),
    ("SI_disc_lr", 0.0002, "'SI_disc_lr'=0.0002: a GAN discriminator setting"),
    ("network_type", "GAN", "'network_type'='GAN': a dict for another task"),
    ("network_type", "ATTEN", "'network_type'='ATTEN': a dict for the teacher network"),
    ("train_SI", "false", "'train_SI'='false': this dict trains the other direction"),
    ("SI_dropout", "maybe", "'SI_dropout'='maybe': must be true or false"),
    ("SI_normalize", "yes", "'SI_normalize'='yes': must be true or false"),
    ("SI_gen_final_activ", "Swish", "'SI_gen_final_activ'='Swish': must be None or a torch.nn activation"),
    ("SI_skip_mode", "residual", "'SI_skip_mode'='residual'"),
    ("batch_size", 12, "'batch_size'=12: batches are 2**batch_base2_exponent"),
])
def test_what_frozenflow_does_not_do_is_refused_naming_the_key(key, value, text, tiny_data, tmp_path, capsys):
    cfg = _write(tmp_path, key, act_dict(**{key: value}))
    out = tmp_path / "s"
    assert run_main(student_main, _args(tiny_data, out, cfg, "--inject", "none")) == 2
    err = capsys.readouterr().err
    assert text in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_the_frozen_part_must_agree_with_the_store(tiny_data, tiny_store, tmp_path, capsys):
    teacher = to_stored(json.loads((tiny_store / "zarr.json").read_text())["attributes"]["teacher_config"])
    frozen = {f"FROZEN_{k}": v for k, v in teacher.items()}
    ok = merge_frozen({**act_dict(), **frozen}, teacher, "store")
    assert ok == {**act_dict(), **frozen}
    wrong = teacher["IS_gen_hidden_dim"] + 1
    cfg = _write(tmp_path, "wrong", {**act_dict(), **frozen, "FROZEN_IS_gen_hidden_dim": wrong})
    assert run_main(student_main, _args(tiny_data, tmp_path / "x", cfg, "--features", str(tiny_store))) == 2
    assert (f"config key 'FROZEN_IS_gen_hidden_dim'={wrong}, but the teacher of {tiny_store} was trained with"
            in capsys.readouterr().err)
    cfg = _write(tmp_path, "extra", {**act_dict(), **frozen, "FROZEN_IS_gen_colour": "red"})
    assert run_main(student_main, _args(tiny_data, tmp_path / "y", cfg, "--features", str(tiny_store))) == 2
    assert "'FROZEN_IS_gen_colour': the frozen network of" in capsys.readouterr().err
    # the original convention: the teacher's IS_ keys unprefixed beside the student's SI_ keys
    legacy = {**act_dict(), **{k: v for k, v in teacher.items() if k.startswith("IS_")}}
    assert merge_frozen(legacy, teacher, "store") == {**act_dict(), **frozen}
    with pytest.raises(ConfigError, match="'IS_gen_hidden_dim'="):
        merge_frozen({**legacy, "IS_gen_hidden_dim": wrong}, teacher, "store")
    assert run_main(student_main, _args(tiny_data, tmp_path / "z", _write(tmp_path, "plainfrozen", {**act_dict(), **frozen}),
                                        "--inject", "none")) == 0
    assert "(no frozen network in this run)" in capsys.readouterr().out


def test_a_dict_read_back_from_student_pt_reproduces_the_run(tiny_data, tiny_store, tmp_path):
    out = tmp_path / "a"
    assert run_main(student_main, _args(tiny_data, out, _write(tmp_path, "act", act_dict()), "--features",
                                        str(tiny_store))) == 0
    back = tmp_path / "back.json"
    back.write_text(json.dumps(ckpt_io.load(out / "student.pt")["config"]))
    again = tmp_path / "b"
    assert run_main(student_main, _args(tiny_data, again, back, "--features", str(tiny_store))) == 0
    first, second = (ckpt_io.load(p / "student.pt") for p in (out, again))
    assert first["config"] == second["config"]
    assert first["metrics"]["val_nrmse"] == second["metrics"]["val_nrmse"]
    assert all(torch.equal(first["model"][k], second["model"][k]) for k in first["model"])


def test_older_frozenflow_names_become_theirs():
    old = {"batch_size": 8, "loss": "var_weighted_mse", "SI_dropout": 0.1}
    assert to_stored(old) == {"batch_base2_exponent": 3, "sup_base_criterion": "VarWeightedMSE", "SI_dropout": 0.1}
    with pytest.raises(ConfigError, match="disagree"):
        to_stored({"batch_size": 8, "batch_base2_exponent": 5})
    c = load_config("student", overrides={"batch_size": 16})
    assert c["batch_base2_exponent"] == 4 and "batch_size" not in c


def test_classify_names_the_reason_per_family():
    unused = classify(act_dict(frozen_variant="RECON_SINO"), "student")
    assert unused["SI_disc_lr"] == "GAN only" and unused["SI_alpha_min"] == "stats loss off"
    assert "frozen_variant" in unused and "network_type" in unused and "train_SI" in unused
    assert "SI_gen_neck" not in unused


def test_their_search_space_module_is_merged_in_order_and_every_value_checked(tiny_data, tmp_path, capsys):
    module = tmp_path / "my_spaces.py"
    module.write_text(
        "from ray import tune\n"
        "config_RAY_IS = {'IS_gen_neck': tune.choice(['medium']), 'IS_gen_hidden_dim': tune.choice([4, 5]),\n"
        "                 'IS_dropout': tune.choice(['true', 'false']), 'IS_gen_final_activ': tune.choice([None, 'ELU'])}\n"
        "config_RAY_IS_learnScale = {'IS_normalize': False, 'IS_fixedScale': 1,\n"
        "                            'IS_learnedScale_init': tune.loguniform(0.5, 5)}\n"
        "config_RAY_SUP = {'batch_base2_exponent': tune.randint(1, 3), 'gen_lr': tune.loguniform(1e-4, 1e-2),\n"
        "                  'sup_base_criterion': tune.choice(['MSELoss', 'VarWeightedMSE']), 'IS_gen_hidden_dim': 6}\n"
        "config_BAD = {'IS_gen_neck': tune.choice(['medium', 'huge'])}\n")
    base = ["--data", str(tiny_data), "--out", str(tmp_path / "t"), "--tune", "--print-config", "--space", "cpu"]
    spec = f"{module}:config_RAY_IS,config_RAY_IS_learnScale,config_RAY_SUP"
    assert run_main(teacher_main, [*base, "--search-space", spec]) == 0
    out = capsys.readouterr().out
    space = json.loads(out[out.index("{"):])
    assert space["IS_gen_hidden_dim"] == 6  # later dicts win, as their builder merges them
    assert space["sup_base_criterion"] == {"choice": ["MSELoss", "VarWeightedMSE"]}
    assert space["IS_dropout"] == {"choice": ["true", "false"]}
    assert run_main(teacher_main, [*base, "--search-space", f"{spec},config_BAD"]) == 2
    err = capsys.readouterr().err
    assert "IS_gen_neck can draw 'huge', which no trial can train" in err and "Traceback" not in err
    assert not (tmp_path / "t").exists()
    assert run_main(teacher_main, [*base, "--search-space", f"{module}:config_NONE"]) == 2
    assert "'config_NONE' is not a dict in the module (dicts there: config_BAD, config_RAY_IS" in capsys.readouterr().err


def test_an_older_frozenflow_dict_still_builds_its_network():
    """Checkpoints of earlier FrozenFlow versions hold the older names and values (batch_size, loss, one
    gen_sino_channels, a numeric dropout, lower-case activations, a fixed scale): they parse and build the
    network they were trained with (channel dropout, the fixed-scale buffer)."""
    old = {"gen_sino_size": 64, "gen_image_size": 32, "gen_sino_channels": 1, "gen_image_channels": 1,
           "SI_gen_neck": "wide", "SI_gen_hidden_dim": 4, "SI_gen_mult": 2.0, "SI_gen_z_dim": 8, "SI_gen_fill": 0,
           "SI_layer_norm": "none", "SI_pad_mode": "zeros", "SI_dropout": 0.1, "SI_skip_mode": "none",
           "SI_exp_kernel": 4, "SI_gen_final_activ": "leaky_relu", "SI_normalize": False, "SI_fixedScale": 1.0,
           "SI_learnedScale_init": None, "SI_output_scale_lr_mult": 0.0, "batch_size": 8, "gen_lr": 0.002,
           "gen_b1": 0.9, "gen_b2": 0.999, "loss": "mse", "lr_schedule": "cosine", "inject_levels": [144, 36, 9]}
    assert check_task_config(old, "student")[1] == {"SI_output_scale_lr_mult": "the output scale is fixed"}
    g = Generator(old, "SI")
    assert "fixed_scale" in g.state_dict() and not any(k.startswith(("log_scale", "skip_convs")) for k in g.state_dict())
    assert [m.p for m in g.modules() if isinstance(m, torch.nn.Dropout2d)][0] == 0.1
    assert g.final_activation.negative_slope == 0.2


def test_a_normalized_student_is_trained_on_shapes_and_evaluated_at_the_true_totals(tiny_data, tmp_path, capsys):
    """SI_normalize true: the loss sees output and target L1-normalised × fixedScale (their training loop);
    evaluate scales each reconstruction to its true image's total, and says so."""
    from phase2_student.evaluate import main as evaluate_main, predict
    from phase2_student.task import load_student
    from shared.data.dataset_io import open_dataset

    out = tmp_path / "norm"
    cfg = _write(tmp_path, "norm", act_dict(SI_normalize="true", SI_fixedScale=2.0, SI_gen_final_activ="Softplus"))
    assert run_main(student_main, _args(tiny_data, out, cfg, "--inject", "none")) == 0
    history = ckpt_io.load(out / "last.pt")["history"]
    # MSE between two images of L1 norm 2 over 32² pixels: far below the unnormalised targets' own scale
    assert history[0]["train_loss"] < 4.0 / 32 ** 2
    data = open_dataset(tiny_data)
    pred = predict(load_student(out / "student.pt"), data, "test")
    truth = abs(data.split("test").actMap[:]).reshape(len(pred), -1).sum(1)
    assert abs(pred).reshape(len(pred), -1).sum(1) == pytest.approx(truth, rel=1e-4)
    assert run_main(evaluate_main, ["--student", str(out / "student.pt"), "--data", str(tiny_data), "--out",
                                    str(tmp_path / "e"), "--methods", "student"]) == 0
    assert "scaled to its true image's total activity" in capsys.readouterr().out


def test_reading_a_config_does_not_import_ray():
    import subprocess
    import sys

    code = ("import sys; from shared.config.construct_dictionaries import load_config; "
            "from shared.config.schema import check_task_config; "
            "check_task_config(load_config('student'), 'student'); print('ray' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"
