"""The model contract with classes FrozenFlow did not write: MONAI's UNet and a researcher's own Generator."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from shared.config.schema import RunConfig
from shared.models import ModelError, load_spec
from shared.models.inspect import main as inspect_main
from shared.models.network import Network, build, unread_keys
from shared.models.side import side_conv
from phase2_student.injection import build_student
from tests.conftest import small_config, tiny_student_config

FOREIGN = Path(__file__).parent / "foreign_models"
OWN = Path(__file__).resolve().parent.parent / "examples" / "own_generator"  # the demo's researcher-style class
RESEARCHER = load_spec(str(OWN / "spec.yaml"))
MONAI = load_spec(str(FOREIGN / "monai_unet.yaml"))
SIZES = {"gen_sino_size": 64, "gen_image_size": 32, "gen_sino_channels_SI": 1, "gen_sino_channels_IS": 1,
         "gen_image_channels": 1}


def researcher_config(**over):
    return {**SIZES, "SI_gen_hidden_dim": 4, "SI_gen_mult": 1.5, "IS_gen_hidden_dim": 3, "IS_gen_mult": 1.5,
            "SI_gen_final_activ": "None", **over}


def monai_config(**over):
    return {**SIZES, "SI_unet_channels": [4, 6, 8, 8, 12, 12], "SI_unet_dropout": 0.0,
            "IS_unet_channels": [3, 4, 6, 6, 8, 8], "IS_unet_dropout": 0.0, **over}


def student_keys(**over):
    """FrozenFlow's own student keys (training, injection) on top of a model's dict."""
    base = {k: v for k, v in tiny_student_config().items() if not k.startswith("SI_")}
    return {**base, **over}


CASES = [(RESEARCHER, researcher_config), (MONAI, monai_config)]


@pytest.mark.parametrize("spec,config", CASES, ids=["researcher", "monai"])
def test_taps_are_found_by_module_path_at_their_nominal_sizes(spec, config):
    teacher = build(spec, config(), "IS")
    sizes = {"enc144": 32, "enc36": 8, "enc9": 2, "dec9": 2, "dec36": 8, "dec144": 32}  # S/2, S/8, S/32 at S = 64
    assert {t: s[1:] for t, s in teacher.tap_shapes.items()} == {t: (n, n) for t, n in sizes.items()}
    mu = torch.rand(2, 1, 32, 32)  # the task pads the 32² image into the 64² grid the class demands
    out, taps = teacher.forward_taps(mu)
    assert out.shape == (2, 1, 64, 64) and all(taps[t].shape[1:] == teacher.tap_shapes[t] for t in sizes)
    _, early = teacher.forward_taps(mu, taps=["enc36", "enc9"], need_output=False)
    assert torch.equal(early["enc9"], taps["enc9"]) and list(early) == ["enc36", "enc9"]


def test_researcher_class_is_called_as_written_and_refuses_what_it_refuses():
    Generator = RESEARCHER.import_factory()
    teacher = build(RESEARCHER, researcher_config(), "IS")
    assert teacher.net.gen_SI is False and build(RESEARCHER, researcher_config(), "SI").net.gen_SI is True
    with pytest.raises(ValueError, match="needs a 64x64 input"):
        Generator(researcher_config(), gen_SI=False)(torch.rand(1, 1, 32, 32))  # alone, the class refuses 32²


@pytest.mark.parametrize("spec,config", CASES, ids=["researcher", "monai"])
def test_inject_none_is_bit_identical_to_the_class_alone(spec, config):
    c = student_keys(**config(), inject_levels=[])
    torch.manual_seed(5)
    alone, _ = spec.build(c, "SI")
    torch.manual_seed(5)
    student = build_student(RunConfig.parse(c, "student"), spec)
    assert list(student.state_dict()) == [f"net.{k}" for k in alone.state_dict()]
    x = torch.randn(2, 1, 64, 64)
    alone.eval(), student.eval()
    want = alone(x)  # the researcher's class crops its own image, MONAI's returns 64² (the task crops)
    o = (want.shape[-1] - 32) // 2
    assert torch.equal(student(x), want[..., o:o + 32, o:o + 32])


@pytest.mark.parametrize("spec,config", CASES, ids=["researcher", "monai"])
def test_zeroed_side_weights_give_the_plain_student_and_gradients_stay_out_of_the_teacher(spec, config):
    torch.manual_seed(0)
    teacher = build(spec, config(), "IS").eval().requires_grad_(False)
    c = student_keys(**config(), inject_levels=[144, 36, 9])
    student = build_student(RunConfig.parse(c, "student"), spec, teacher.tap_shapes).eval()
    plain = build_student(RunConfig.parse(student_keys(**config(), inject_levels=[]), "student"), spec).eval()
    plain.load_state_dict({k: v for k, v in student.state_dict().items() if k.startswith("net.")})  # a subset
    x = torch.randn(2, 1, 64, 64)
    _, feats = teacher.forward_taps(torch.rand(2, 1, 32, 32))
    assert not torch.allclose(student(x, feats), plain(x))
    with torch.no_grad():
        for side in student.side.values():
            side.weight.zero_()
    assert torch.equal(student(x, feats), plain(x))
    # with live (not stored) teacher features: scales and side weights learn, the teacher gets nothing
    for side in student.side.values():
        nn.init.normal_(side.weight, std=0.1)
    student.train()
    student(x, feats).square().mean().backward()
    assert all(p.grad is not None for p in student.scales.values())  # (a dead-ReLU feature gives a zero grad)
    assert sum(p.grad.abs().sum() for p in student.scales.values()) > 0
    assert sum(s.weight.grad.abs().sum() for s in student.side.values()) > 0
    assert all(p.grad is None for p in teacher.parameters()) and not any(f.requires_grad for f in feats.values())


@pytest.mark.parametrize("kind,kw", [(nn.Conv2d, dict(padding=1)), (nn.Conv2d, dict(padding=1, padding_mode="replicate")),
                                     (nn.Conv2d, dict(stride=2, padding=1)),
                                     (nn.ConvTranspose2d, dict(stride=2, padding=1, output_padding=1))])
def test_a_side_convolution_is_the_widened_layer_over_the_concatenation(kind, kw):
    torch.manual_seed(1)
    receiver = kind(6, 5, 3, **kw).double()
    side = side_conv(receiver, 4, "torch_default", "test").double()
    widened = kind(10, 5, 3, **kw).double()
    with torch.no_grad():  # [W_x, W_f] over [x, f]: the receiver's weights and the side's, the receiver's bias
        widened.weight.copy_(torch.cat([receiver.weight, side.weight], dim=1 if kind is nn.Conv2d else 0))
        widened.bias.copy_(receiver.bias)
    x, f = torch.randn(2, 6, 9, 9, dtype=torch.double), torch.randn(2, 4, 9, 9, dtype=torch.double)
    assert side.bias is None
    assert torch.allclose(widened(torch.cat([x, f], 1)), receiver(x) + side(f), atol=1e-12)


def test_side_weights_start_as_the_widened_layer_would():
    torch.manual_seed(0)
    receiver = nn.Conv2d(32, 64, 3, padding=1)
    bound = 1 / math.sqrt((32 + 48) * 9)  # torch's kaiming_uniform(a=√5) bound with the widened fan-in
    default = side_conv(receiver, 48, "torch_default", "t").weight
    assert default.abs().max() <= bound and default.abs().max() > 0.95 * bound
    he = side_conv(receiver, 48, "kaiming_normal", "t").weight
    assert he.std().item() == pytest.approx(math.sqrt(2 / (1 + 0.2 ** 2) / (80 * 9)), rel=0.05)
    assert torch.all(side_conv(receiver, 48, "zeros", "t").weight == 0)


def test_wrong_paths_sizes_and_layers_are_refused_by_name(tmp_path):
    def spec(**maps):
        path = tmp_path / "s.json"
        path.write_text(json.dumps({"factory": f"{OWN / 'generator.py'}:Generator", **maps}))
        return load_spec(str(path))

    with pytest.raises(ModelError, match=r"tap enc144: no module 'contract_block.0'.*nearest: contract_blocks.0"):
        build(spec(taps={"enc144": "contract_block.0"}), researcher_config(), "IS")
    shapes = build(RESEARCHER, researcher_config(), "IS").tap_shapes
    bad = spec(taps={}, receivers={"dec144": "expand_blocks.2.0"})
    with pytest.raises(ModelError, match=r"teacher enc144 \(contract_blocks.0\) is 32×32 but student receiver dec144 "
                                         r"\(expand_blocks.2.0\) takes 8×8"):
        build_student(RunConfig.parse(student_keys(**researcher_config(), inject_levels=[144], inject_dec_to_enc=False), "student"), bad, shapes,
                      teacher_paths=RESEARCHER.taps)
    seq = spec(receivers={"dec144": "expand_blocks.4"})
    with pytest.raises(ModelError, match=r"expand_blocks.4\) is a Sequential; a receiver must be a Conv2d"):
        build_student(RunConfig.parse(student_keys(**researcher_config(), inject_levels=[144], inject_dec_to_enc=False), "student"), seq, shapes)
    with pytest.raises(ModelError, match="no receiver for student tap enc144"):
        build_student(RunConfig.parse(student_keys(**researcher_config(), inject_levels=[144]), "student"),
                      spec(receivers={"dec144": "expand_blocks.4.0"}), shapes)
    with pytest.raises(ModelError, match=r"taps.enc72 is not a tap name"):
        spec(taps={"enc72": "neck"})
    (tmp_path / "x.yaml").write_text("factory: nowhere_module:make\nextra: 1\n")
    with pytest.raises(ModelError, match="unknown key 'extra'"):
        load_spec(str(tmp_path / "x.yaml"))
    (tmp_path / "x.yaml").write_text("factory: nowhere_module:make\n")
    with pytest.raises(ModelError, match="factory module 'nowhere_module' cannot be imported"):
        build(load_spec(str(tmp_path / "x.yaml")), researcher_config(), "IS")


def test_the_models_own_errors_name_the_key_and_unread_keys_are_listed():
    c = researcher_config()
    del c["IS_gen_hidden_dim"]
    with pytest.raises(ModelError, match=r"config key 'IS_gen_hidden_dim' is missing: .*reads it for the IS model"):
        build(RESEARCHER, c, "IS")
    with pytest.raises(ModelError, match=r"refused the IS config: ValueError: IS_gen_hidden_dim must be positive"):
        build(RESEARCHER, researcher_config(IS_gen_hidden_dim=0), "IS")
    c = student_keys(**researcher_config(SI_gen_fill=2, IS_gen_hidden_dim=3), inject_levels=[])
    net = build_student(RunConfig.parse(c, "student"), RESEARCHER)
    # SI_gen_fill is never read by this class; the IS_ keys are its teacher's, FrozenFlow's keys are its own
    assert unread_keys(net, c, "student") == ["SI_gen_fill"]
    builtin = build(load_spec("builtin"), small_config("SI"), "SI")
    assert unread_keys(builtin, small_config("SI"), "student") == []


def test_inspect_model_lists_paths_shapes_and_checks_the_maps(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(researcher_config()))
    assert inspect_main(["--model", str(OWN / "spec.yaml"), "--config", str(cfg),
                         "--direction", "IS"]) == 0
    out = capsys.readouterr().out
    n = sum(p.numel() for p in build(RESEARCHER, researcher_config(), "IS").net.parameters())
    assert f"IS at S=64: {n:,} parameters" in out
    assert any(line.split()[:4] == ["contract_blocks.0", "Sequential", "(1,", "64,"] for line in out.splitlines())
    assert "tap enc144: contract_blocks.0 -> (3, 32, 32) (ok)" in out
    assert "receiver dec144: expand_blocks.4.0 takes (6, 32, 32) (ok)" in out
    assert inspect_main(["--model", str(OWN / "spec.yaml"), "--config", str(cfg), "--direction", "SI"]) == 0
    assert "SI at S=64" in capsys.readouterr().out  # the SI input channels from gen_sino_channels_SI
