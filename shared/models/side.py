"""Injection as a side convolution (ControlNet style; docs/DESIGN.md §6).

A convolution over the concatenation ``[x, s⊙f]`` equals ``conv_x(x) + conv_f(s⊙f)``: the first
is the receiving layer as it is, the second a bias-free convolution of the same kind, kernel,
stride, padding and dilation over the injected channels only. A forward hook adds it to the
receiver's output, so the receiving layer keeps its weights and state-dict keys.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .spec import ModelError

NEGATIVE_SLOPE = 0.2  # the built-in Generator's LeakyReLU slope (kaiming_normal side init)


def side_conv(receiver: nn.Module, extra: int, init: str, where: str) -> nn.Module:
    """The bias-free convolution over ``extra`` injected channels that widening ``receiver`` would add.

    Its weights are the extra slice of the widened layer, initialised as the widened layer would
    be (``init``: see ``spec.SIDE_INITS``), so injecting through the hook starts where a class
    that built the wider layer would start.
    """
    if isinstance(receiver, nn.ConvTranspose2d):
        kind = nn.ConvTranspose2d
        kw = dict(output_padding=receiver.output_padding)
    elif isinstance(receiver, nn.Conv2d):
        kind = nn.Conv2d
        kw = dict(padding_mode=receiver.padding_mode)
    else:
        raise ModelError(f"{where} is a {type(receiver).__name__}; a receiver must be a Conv2d or ConvTranspose2d "
                         f"(the first convolution after the tap)")
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
