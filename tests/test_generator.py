import itertools
import math

import pytest
import torch

from shared.models.generator import ConfigError, Generator, channel_dims
from shared.models import TAP_NAMES, load_spec
from shared.models.network import build
from tests.conftest import small_config

BUILTIN = load_spec("builtin")


@pytest.mark.parametrize("size", [256, 288, 320])
def test_output_shapes_every_neck_skip_size(size):
    torch.manual_seed(0)
    for neck, skip in itertools.product(["narrow", "medium", "wide"], ["none", "add", "concat"]):
        si = Generator(small_config("SI", size, 180, gen_neck=neck, skip_mode=skip, gen_hidden_dim=2), "SI").eval()
        with torch.no_grad():  # the class maps S×S to S×S; the task crops (shared.models.Network)
            assert si(torch.randn(1, 1, size, size)).shape == (1, 1, size, size), (neck, skip, size)
        c = small_config("IS", size, 180, gen_neck=neck, skip_mode=skip, gen_hidden_dim=2)
        is_ = build(BUILTIN, c, "IS").eval()
        with torch.no_grad():  # the task pads the 180² image into the S×S grid
            assert is_(torch.randn(1, 1, 180, 180)).shape == (1, 1, size, size), (neck, skip, size)


def test_tap_shapes_match_design():
    c = small_config("SI", 288, 180, gen_hidden_dim=8, gen_mult=2.0)
    g = build(BUILTIN, c, "SI").eval()
    d = channel_dims(8, 2.0)
    assert d == [int(8 * 2.0 ** (k ** 0.7)) for k in range(5)]
    with torch.no_grad():
        _, taps = g.forward_taps(torch.randn(2, 1, 288, 288))
    assert list(taps) == list(TAP_NAMES)
    want = {"enc144": (d[0], 144), "enc36": (d[2], 36), "enc9": (d[4], 9),
            "dec9": (d[4], 9), "dec36": (d[2], 36), "dec144": (d[0], 144)}
    for name, (ch, s) in want.items():
        assert taps[name].shape == (2, ch, s, s), name
        assert g.tap_shapes[name] == (ch, s, s)
    # post-activation taps: LeakyReLU output has negatives scaled by 0.2, never a pure linear map
    assert (taps["enc144"] < 0).any() and taps["enc144"].min() > -0.2 * 100


def test_three_sinogram_channels_and_exp_kernel_3():
    c = small_config("SI", 64, 40, exp_kernel=3, gen_sino_channels=3)
    assert build(BUILTIN, c, "SI")(torch.randn(2, 3, 64, 64)).shape == (2, 1, 40, 40)


@pytest.mark.parametrize("key", ["SI_gen_neck", "gen_sino_size", "gen_sino_channels_SI", "SI_dropout"])
def test_missing_key_named(key):
    c = small_config("SI")
    del c[key]
    with pytest.raises(ConfigError, match=key):
        Generator(c, "SI")


@pytest.mark.parametrize("key,value", [("SI_gen_neck", "huge"), ("SI_layer_norm", "weird"), ("SI_skip_mode", "mul"),
                                       ("SI_exp_kernel", 5), ("gen_sino_size", 100), ("SI_gen_hidden_dim", 0),
                                       ("SI_dropout", 1.5), ("SI_gen_final_activ", "swish"), ("SI_fixedScale", None),
                                       ("gen_image_size", 400), ("SI_normalize", "yes")])
def test_bad_value_named(key, value):
    c = small_config("SI")
    c[key] = value
    with pytest.raises(ConfigError, match=key):
        Generator(c, "SI")


def test_wrong_input_shape_is_clear():
    g = Generator(small_config("SI"), "SI")
    with pytest.raises(ValueError, match=r"\[B, 1, 64, 64\]"):
        g(torch.randn(1, 1, 40, 40))


def test_he_initialisation():
    torch.manual_seed(0)
    g = Generator(small_config("SI", 288, 180, gen_hidden_dim=32, gen_mult=2.0), "SI")
    conv = g.encoder[2].head[0]
    fan_in = conv.in_channels * 9
    expected = math.sqrt(2.0 / (1 + 0.2 ** 2) / fan_in)
    assert abs(conv.weight.std().item() / expected - 1) < 0.05
    assert torch.all(conv.bias == 0)


def test_output_scale_fixed_learned_and_normalise():
    """Their scale rule: normalize true → output and target L1-normalised × fixedScale (by the training step,
    over the loss region; the network returns its activation's output); normalize false → a learned scale
    from learnedScale_init (fixedScale present and unused); learnedScale_init null → FrozenFlow's fixed scale."""
    from shared.config.schema import GeneratorConfig
    from shared.train.loop import l1_normalized

    torch.manual_seed(0)
    x = torch.randn(2, 1, 64, 64)
    norm = Generator(small_config("SI", normalize="true", fixedScale=3.0, learnedScale_init=5.0), "SI").eval()
    assert norm.param_groups() == [] and float(norm.fixed_scale) == 1.0
    y = l1_normalized(norm(x), 3.0)
    assert torch.allclose(y.abs().flatten(1).sum(1), torch.full((2,), 3.0), rtol=1e-4)
    cfg = GeneratorConfig.from_flat(small_config("SI", normalize=True, fixedScale=3.0, learnedScale_init=5.0), "SI")
    assert cfg.scale_rule == ("normalized", "fixedScale") and "SI_learnedScale_init" in cfg.unused_keys
    both = small_config("SI", normalize="false", fixedScale=1, learnedScale_init=2.0, output_scale_lr_mult=10.0)
    learned = Generator(both, "SI")
    (group,) = learned.param_groups()
    (p,) = group["params"]
    assert abs(learned.output_scale().item() - 2.0) < 1e-6 and group["lr_mult"] == 10.0
    assert GeneratorConfig.from_flat(both, "SI").unused_keys == {
        "SI_fixedScale": "SI_normalize is false: the scale is learned from SI_learnedScale_init"}
    learned(x).sum().backward()
    assert p.grad is not None and p.grad.abs() > 0
    fixed = Generator(small_config("SI", fixedScale=2.0, learnedScale_init=None), "SI")
    assert fixed.param_groups() == [] and float(fixed.fixed_scale) == 2.0


@pytest.mark.parametrize("direction", ["SI", "IS"])
def test_tiny_net_overfits_four_samples(direction):
    torch.manual_seed(0)
    c = small_config(direction, 64, 40, gen_hidden_dim=8, layer_norm="none")
    g = build(BUILTIN, c, direction)
    x = torch.randn(4, 1, 64, 64) if direction == "SI" else torch.rand(4, 1, 40, 40)
    out_shape = (4, 1, 40, 40) if direction == "SI" else (4, 1, 64, 64)
    # smooth, sample-specific targets (white noise is not something a U-Net should memorise)
    target = torch.nn.functional.interpolate(torch.rand(4, 1, 8, 8), size=out_shape[-2:], mode="bilinear")
    opt = torch.optim.Adam(g.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(g(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
