import itertools
import math

import pytest
import torch

from shared.generator import TAPS, ConfigError, Generator, channel_dims
from tests.conftest import small_config


@pytest.mark.parametrize("size", [256, 288, 320])
def test_output_shapes_every_neck_skip_size(size):
    torch.manual_seed(0)
    for neck, skip in itertools.product(["narrow", "medium", "wide"], ["none", "add", "concat"]):
        si = Generator(small_config("SI", size, 180, gen_neck=neck, skip_mode=skip, gen_hidden_dim=2), "SI").eval()
        with torch.no_grad():
            assert si(torch.randn(1, 1, size, size)).shape == (1, 1, 180, 180), (neck, skip, size)
        is_ = Generator(small_config("IS", size, 180, gen_neck=neck, skip_mode=skip, gen_hidden_dim=2), "IS").eval()
        with torch.no_grad():
            assert is_(torch.randn(1, 1, 180, 180)).shape == (1, 1, size, size), (neck, skip, size)


def test_tap_shapes_match_design():
    c = small_config("SI", 288, 180, gen_hidden_dim=8, gen_mult=2.0)
    g = Generator(c, "SI").eval()
    d = channel_dims(8, 2.0)
    assert d == [int(8 * 2.0 ** (k ** 0.7)) for k in range(5)]
    with torch.no_grad():
        _, taps = g.forward_taps(torch.randn(2, 1, 288, 288))
    assert list(taps) == list(TAPS)
    want = {"enc144": (d[0], 144), "enc36": (d[2], 36), "enc9": (d[4], 9),
            "dec9": (d[4], 9), "dec36": (d[2], 36), "dec144": (d[0], 144)}
    for name, (ch, s) in want.items():
        assert taps[name].shape == (2, ch, s, s), name
        assert g.tap_shapes()[name] == (ch, s, s)
    # post-activation taps: LeakyReLU output has negatives scaled by 0.2, never a pure linear map
    assert (taps["enc144"] < 0).any() and taps["enc144"].min() > -0.2 * 100


def test_three_sinogram_channels_and_exp_kernel_3():
    c = small_config("SI", 64, 40, exp_kernel=3, gen_sino_channels=3)
    assert Generator(c, "SI")(torch.randn(2, 3, 64, 64)).shape == (2, 1, 40, 40)


@pytest.mark.parametrize("key", ["SI_gen_neck", "gen_sino_size", "SI_learnedScale_init", "SI_dropout"])
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


def _conv_in_channels(g):
    return {name: m.in_channels for name, m in g.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))}


def test_extra_channels_widen_exactly_the_layer_after_the_tap():
    c = small_config("SI", skip_mode="concat")
    plain = _conv_in_channels(Generator(c, "SI"))
    after = {"enc144": "encoder.1.head.0", "enc36": "encoder.3.head.0", "enc9": "neck.0.0",
             "dec9": "decoder.0.head.0", "dec36": "decoder.2.head.0", "dec144": "decoder.4.0"}
    for tap, layer in after.items():
        widened = _conv_in_channels(Generator(c, "SI", extra_channels={tap: 5}))
        diff = {k: widened[k] - plain[k] for k in plain if widened[k] != plain[k]}
        assert diff == {layer: 5}, tap


def test_inject_concatenates_after_tap_and_is_used():
    torch.manual_seed(0)
    c = small_config("SI")
    g = Generator(c, "SI", extra_channels={"dec144": 3, "enc36": 2}).eval()
    x = torch.randn(2, 1, 64, 64)
    inj = {"dec144": torch.randn(2, 3, 32, 32), "enc36": torch.randn(2, 2, 8, 8)}
    y1 = g(x, inject=inj)
    y2 = g(x, inject={k: v * 2 for k, v in inj.items()})
    assert y1.shape == (2, 1, 40, 40) and not torch.allclose(y1, y2)
    with pytest.raises(ValueError, match="inject\\['dec144'\\]"):
        g(x, inject={"enc36": inj["enc36"]})
    with pytest.raises(ValueError, match=r"\[2, 3, 32, 32\]"):
        g(x, inject={**inj, "dec144": torch.randn(2, 3, 16, 16)})


@pytest.mark.parametrize("skip_mode", ["none", "concat"])
def test_injection_appends_channels_and_zero_weights_give_the_plain_network(skip_mode):
    """Widening only appends input channels after the tap: with the plain weights copied in and the
    appended slices zeroed, the widened network computes exactly the plain one, whatever is injected."""
    c = small_config("SI", skip_mode=skip_mode)
    extra = {"enc144": 3, "dec36": 2, "enc9": 4, "dec9": 1}
    torch.manual_seed(3)
    plain = Generator(c, "SI").eval()
    wide = Generator(c, "SI", extra_channels=extra).eval()
    ps, ws = plain.state_dict(), wide.state_dict()
    assert list(ps) == list(ws)  # no module added or renamed
    merged = {}
    for k, p in ps.items():
        w = ws[k]
        if p.shape == w.shape:
            merged[k] = p
            continue
        dim = next(d for d in range(p.dim()) if p.shape[d] != w.shape[d])  # in-channels (0 for transposed)
        assert w.shape[dim] - p.shape[dim] in extra.values(), k
        z = torch.zeros_like(w)
        z.narrow(dim, 0, p.shape[dim]).copy_(p)  # plain channels first, injected ones appended
        merged[k] = z
    assert sum(ps[k].shape != ws[k].shape for k in ps) == len(extra)  # exactly one layer per tap widened
    wide.load_state_dict(merged)
    x = torch.randn(2, 1, 64, 64)
    sizes = {"enc144": 32, "dec36": 8, "enc9": 2, "dec9": 2}
    inject = {t: torch.randn(2, n, sizes[t], sizes[t]) for t, n in extra.items()}
    assert torch.equal(wide(x, inject), plain(x))
    for k in merged:  # and the injected channels do reach the output once their weights are not zero
        if merged[k].shape != ps[k].shape:
            merged[k] = merged[k] + 0.1
    wide.load_state_dict(merged)
    assert not torch.allclose(wide(x, inject), plain(x))


def test_he_initialisation():
    torch.manual_seed(0)
    g = Generator(small_config("SI", 288, 180, gen_hidden_dim=32, gen_mult=2.0), "SI")
    conv = g.encoder[2].head[0]
    fan_in = conv.in_channels * 9
    expected = math.sqrt(2.0 / (1 + 0.2 ** 2) / fan_in)
    assert abs(conv.weight.std().item() / expected - 1) < 0.05
    assert torch.all(conv.bias == 0)


def test_output_scale_fixed_learned_and_normalise():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 64, 64)
    fixed = Generator(small_config("SI", normalize=True, fixedScale=3.0, learnedScale_init=None), "SI").eval()
    y = fixed(x)
    assert torch.allclose(y.abs().flatten(1).sum(1), torch.full((2,), 3.0), rtol=1e-4)
    assert fixed.scale_parameters() == [] and "fixed_scale" in fixed.state_dict()
    learned = Generator(small_config("SI", fixedScale=None, learnedScale_init=2.0, output_scale_lr_mult=10.0), "SI")
    (p,) = learned.scale_parameters()
    assert abs(learned.output_scale().item() - 2.0) < 1e-6 and learned.output_scale_lr_mult == 10.0
    learned(x).sum().backward()
    assert p.grad is not None and p.grad.abs() > 0


@pytest.mark.parametrize("direction", ["SI", "IS"])
def test_tiny_net_overfits_four_samples(direction):
    torch.manual_seed(0)
    c = small_config(direction, 64, 40, gen_hidden_dim=8, layer_norm="none")
    g = Generator(c, direction)
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
