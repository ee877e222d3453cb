"""Injection as a side convolution (ControlNet style; docs/DESIGN.md §6).

A convolution over the concatenation ``[x, s⊙f]`` equals ``conv_x(x) + conv_f(s⊙f)``: the first
is the receiving layer as it is, the second a bias-free convolution of the same kind, kernel,
stride, padding and dilation over the injected channels only. A forward hook adds it to the
receiver's output, so the receiving layer keeps its weights and state-dict keys.

The other merge (``inject_merge: mixer``): a 1×1 convolution over ``[x, f]`` back to the receiver's
input channels, applied by a forward pre-hook to what the receiver takes.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .spec import ModelError

NEGATIVE_SLOPE = 0.2  # the built-in Generator's LeakyReLU slope (kaiming_normal side init)


def _check_receiver(receiver: nn.Module, where: str) -> None:
    if not isinstance(receiver, (nn.Conv2d, nn.ConvTranspose2d)):
        raise ModelError(f"{where} is a {type(receiver).__name__}; a receiver must be a Conv2d or ConvTranspose2d "
                         f"(the first convolution after the tap)")


def side_conv(receiver: nn.Module, extra: int, init: str, where: str) -> nn.Module:
    """The bias-free convolution over ``extra`` injected channels that widening ``receiver`` would add.

    Its weights are the extra slice of the widened layer, initialised as the widened layer would
    be (``init``: see ``spec.SIDE_INITS``), so injecting through the hook starts where a class
    that built the wider layer would start.
    """
    _check_receiver(receiver, where)
    if isinstance(receiver, nn.ConvTranspose2d):
        kind = nn.ConvTranspose2d
        kw = dict(output_padding=receiver.output_padding)
    else:
        kind = nn.Conv2d
        kw = dict(padding_mode=receiver.padding_mode)
    if receiver.groups != 1:
        raise ModelError(f"{where} is a grouped convolution (groups={receiver.groups}); concatenating channels "
                         f"into it is not defined — name an ungrouped one")
    common = dict(kernel_size=receiver.kernel_size, stride=receiver.stride, padding=receiver.padding,
                  dilation=receiver.dilation, **kw)
    c_in = receiver.in_channels
    device, dtype = receiver.weight.device, receiver.weight.dtype
    widened = kind(c_in + extra, receiver.out_channels, bias=False, **common, device=device, dtype=dtype)
    if init == "kaiming_normal":
        nn.init.kaiming_normal_(widened.weight, a=NEGATIVE_SLOPE, nonlinearity="leaky_relu")
    side = kind(extra, receiver.out_channels, bias=False, **common, device=device, dtype=dtype)
    with torch.no_grad():
        # Conv2d weights are (out, in, k, k), ConvTranspose2d's (in, out, k, k): the extra inputs sit last
        side.weight.copy_(widened.weight[:, c_in:] if kind is nn.Conv2d else widened.weight[c_in:])
        if init == "zeros":
            side.weight.zero_()
    return side


class Mixer(nn.Conv2d):
    """1×1 convolution ``[x, f]`` (``passed`` + injected channels) → ``passed`` channels, with a bias."""

    def __init__(self, passed: int, injected: int, **kw):
        super().__init__(passed + injected, passed, kernel_size=1, **kw)
        self.passed = passed


def mixer(receiver: nn.Module, extra: int, init: float, where: str) -> Mixer:
    """The mixer in front of ``receiver`` for ``extra`` injected channels. Initialised so the network starts
    as it was with the features only beginning to flow: identity on the receiver's own channels, bias 0,
    the injected block torch's default 1×1-convolution draw (uniform ±1/√fan_in) times ``init``
    (``feature_scale_init``, 0.1 by default: the scale merge's starting strength). With that block zero the
    network is the plain one exactly."""
    _check_receiver(receiver, where)
    c = receiver.in_channels
    m = Mixer(c, extra, device=receiver.weight.device, dtype=receiver.weight.dtype)
    with torch.no_grad():
        m.weight.mul_(float(init))  # the default draw, scaled …
        m.weight[:, :c].zero_()
        m.weight[:, :c, 0, 0].copy_(torch.eye(c))  # … and the receiver's own channels passed through
        m.bias.zero_()
    return m
