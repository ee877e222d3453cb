"""The one config-driven U-Net-like Generator, for both directions.

``Generator(config, "SI")`` maps a padded S×S sinogram to a centre-cropped image;
``Generator(config, "IS")`` maps an image (zero-padded to S×S) to an S×S sinogram.
Config keys carry the direction prefix (``SI_gen_neck`` …) plus shared keys
(``gen_sino_size``, ``gen_image_size``, ``gen_sino_channels``, ``gen_image_channels``).

Layout at working size S (288 by default):
  encoder  5 stride-2 blocks S→S/2→…→S/32 (288→144→72→36→18→9), dim_k = int(h·mult^(k^0.7))
  neck     at S/32: narrow (→5→3→1×1 z_dim→3→5→9), medium (→5×5 convs→9), wide (stays 9×9)
  decoder  5 transposed-conv blocks S/32→…→S, the last one linear
Taps (named by their size at S=288): enc144/enc36/enc9 = outputs of encoder blocks 0/2/4,
dec9 = neck output, dec36/dec144 = outputs of decoder blocks 1/3.  ``extra_channels`` widens
the input of the layer right after a tap, and ``inject`` tensors are concatenated there.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config.schema import LEVELS, N_SCALES, REFERENCE_SIZE, ConfigError, GeneratorConfig

__all__ = ["Generator", "GeneratorConfig", "ConfigError", "TapInfo", "TAPS", "LEVELS", "channel_dims"]

SIDES = ("enc", "dec")
# Every tap in data-flow order: the student's encoder taps, then the neck (dec9) and decoder taps.
TAPS = tuple(f"enc{lv}" for lv in LEVELS) + tuple(f"dec{lv}" for lv in reversed(LEVELS))
NEGATIVE_SLOPE = 0.2

FINAL_ACTIVATIONS = {  # keyed by CHOICES["gen_final_activ"]
    "none": nn.Identity, "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(NEGATIVE_SLOPE),
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "softplus": nn.Softplus, "elu": nn.ELU,
}


@dataclasses.dataclass(frozen=True)
class TapInfo:
    """One intermediate feature map (timm's ``feature_info``): where it is taken and its shape."""

    name: str  # e.g. "enc144"
    side: str  # "enc" | "dec"
    level: int  # size at the reference S = 288 (144, 36, 9)
    channels: int
    size: int  # spatial size at this Generator's S

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)


def tap_at(side: str, nominal_size: int) -> str | None:
    """The tap at a stage output of this nominal (S = 288) size, if that size is a level."""
    return f"{side}{nominal_size}" if nominal_size in LEVELS else None


def channel_dims(hidden_dim: int, mult: float) -> list[int]:
    return [int(hidden_dim * mult ** (k ** 0.7)) for k in range(N_SCALES)]


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        groups = math.gcd(channels, 8)
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


class ConvLayer(nn.Sequential):
    """conv → norm → LeakyReLU → dropout (``linear=True``: the conv alone)."""

    def __init__(self, c_in, c_out, kernel, stride=1, padding=0, *, norm="none", pad_mode="zeros",
                 dropout=0.0, transpose=False, output_padding=0, linear=False):
        if transpose:
            conv = nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding, output_padding=output_padding)
        else:
            conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, padding_mode=pad_mode)
        layers = [conv]
        if not linear:
            layers += [norm_layer(norm, c_out), nn.LeakyReLU(NEGATIVE_SLOPE)]
            if dropout > 0:
                layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class Block(nn.Module):
    """One resolution change (``head``) followed by ``fill`` same-size 3×3 layers."""

    def __init__(self, head: nn.Module, c_out: int, fill: int, **layer_kw):
        super().__init__()
        self.head = head
        self.fill = nn.Sequential(*[ConvLayer(c_out, c_out, 3, 1, 1, **layer_kw) for _ in range(fill)])

    def forward(self, x):
        return self.fill(self.head(x))


class Generator(nn.Module):
    """``Generator(config, "SI")``: ``config`` is the flat dict (or a parsed :class:`GeneratorConfig`).

    ``extra_channels`` (tap → C) widens the layer right after each named tap; ``forward(x, inject)``
    then concatenates ``inject[tap]`` there.  Without them the network is exactly the plain one.
    ``feature_info`` lists the taps (declared once, while the stages are built).
    """

    def __init__(self, config: dict | GeneratorConfig, direction: str = "SI",
                 extra_channels: dict[str, int] | None = None):
        super().__init__()
        cfg = config if isinstance(config, GeneratorConfig) else GeneratorConfig.from_flat(config, direction)
        if cfg.direction != direction:
            raise ConfigError(f"a {cfg.direction} config cannot build a {direction} Generator")
        extra = dict(extra_channels or {})
        unknown = set(extra) - set(TAPS)
        if unknown:
            raise ConfigError(f"extra_channels has unknown tap(s) {sorted(unknown)}; taps are {list(TAPS)}")
        self.direction, self.cfg, self.extra_channels = direction, cfg, extra
        self.size, self.image_size = cfg.gen_sino_size, cfg.gen_image_size
        self.in_channels, self.out_channels = cfg.in_channels, cfg.out_channels
        self.dims = dims = channel_dims(cfg.gen_hidden_dim, cfg.gen_mult)
        kw = dict(norm=cfg.layer_norm, pad_mode=cfg.pad_mode, dropout=cfg.dropout)
        S, fill = self.size, cfg.gen_fill
        # Stages in data-flow order; each stage's input also receives the tap of the stage before it.
        self.feature_info: dict[str, TapInfo] = {}
        self._stage_taps: list[str | None] = []

        def stage_output(side, nominal, channels, size):
            tap = tap_at(side, nominal)
            if tap:
                self.feature_info[tap] = TapInfo(tap, side, nominal, channels, size)
            received = self._stage_taps[-1] if self._stage_taps else None
            self._stage_taps.append(tap)
            return extra.get(received, 0)

        # Encoder: five stride-2 blocks S → S/32.
        self.encoder = nn.ModuleList()
        prev = self.in_channels
        for k in range(N_SCALES):
            c_in = prev + stage_output("enc", REFERENCE_SIZE // 2 ** (k + 1), dims[k], S // 2 ** (k + 1))
            self.encoder.append(Block(ConvLayer(c_in, dims[k], 3, 2, 1, **kw), dims[k], fill, **kw))
            prev = dims[k]

        n = S // 2 ** N_SCALES
        c_in = dims[-1] + stage_output("dec", REFERENCE_SIZE // 2 ** N_SCALES, dims[-1], n)
        self.neck = self._build_neck(cfg.gen_neck, n, c_in, dims[-1], cfg.gen_z_dim, kw)

        # Decoder block j upsamples S/2^(5-j) → S/2^(4-j); its input is joined with the encoder output of
        # the same size (block 4-j) by the skip mode, then with any injected tensor.
        up = dict(kernel=cfg.exp_kernel, stride=2, padding=1, transpose=True,
                  output_padding=1 if cfg.exp_kernel == 3 else 0)
        self.decoder = nn.ModuleList()
        prev = dims[-1]
        for j in range(N_SCALES):
            c_next = dims[N_SCALES - 2 - j] if j < N_SCALES - 1 else self.out_channels
            c_in = prev + (dims[N_SCALES - 1 - j] if cfg.skip_mode == "concat" else 0)
            c_in += stage_output("dec", REFERENCE_SIZE // 2 ** (N_SCALES - 1 - j), c_next, S // 2 ** (N_SCALES - 1 - j))
            if j < N_SCALES - 1:
                self.decoder.append(Block(ConvLayer(c_in, c_next, **up, **kw), c_next, fill, **kw))
            else:  # final block: linear (no norm/activation; the final activation follows)
                self.decoder.append(ConvLayer(c_in, c_next, **up, linear=True))
            prev = c_next
        assert tuple(self.feature_info) == TAPS, self.feature_info  # the naming rule yields every level once

        self.final_activation = FINAL_ACTIVATIONS[cfg.gen_final_activ]()
        self.normalize = cfg.normalize
        if cfg.fixedScale is not None:
            self.register_buffer("fixed_scale", torch.tensor(float(cfg.fixedScale)))
            self.log_scale = None
        else:
            self.log_scale = nn.Parameter(torch.tensor(math.log(float(cfg.learnedScale_init))))
        self.output_scale_lr_mult = float(cfg.output_scale_lr_mult)
        self.reset_parameters()

    @staticmethod
    def _build_neck(kind, n, c_in, c_out, z_dim, kw) -> nn.Sequential:
        """Neck at the n×n bottom (n = S/32 = 9 at S=288); valid convolutions shrink, transposed grow."""
        def down(a, b, ci, co, **k):
            return ConvLayer(ci, co, a - b + 1, **{**kw, **k})

        def up(a, b, ci, co):
            return ConvLayer(ci, co, b - a + 1, transpose=True, **kw)

        m = min(n, 5)
        if kind == "narrow":  # n → 5 → 3 → 1 (z_dim) → 3 → 5 → n
            t = min(m, 3)
            no_norm = {"norm": "none"}  # a 1×1 map cannot be instance-/batch-normalised reliably
            return nn.Sequential(down(n, m, c_in, c_out), down(m, t, c_out, c_out), down(t, 1, c_out, z_dim, **no_norm),
                                 up(1, t, z_dim, c_out), up(t, m, c_out, c_out), up(m, n, c_out, c_out))
        if kind == "medium":  # n → 5×5 with z_dim channels, two 5×5 convs, → n
            return nn.Sequential(down(n, m, c_in, z_dim), ConvLayer(z_dim, z_dim, 3, 1, 1, **kw),
                                 ConvLayer(z_dim, z_dim, 3, 1, 1, **kw), up(m, n, z_dim, c_out))
        return nn.Sequential(ConvLayer(c_in, c_out, 3, 1, 1, **kw), ConvLayer(c_out, c_out, 3, 1, 1, **kw))

    def reset_parameters(self):
        """He (Kaiming) initialisation for the LeakyReLU layers, zero biases."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, a=NEGATIVE_SLOPE, nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, inject: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The output; ``inject`` (tap → tensor) is concatenated after the taps built with ``extra_channels``."""
        return self._run(x, inject, None)

    def forward_taps(self, x: torch.Tensor, inject: dict[str, torch.Tensor] | None = None
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The output and every tap ``{name: [B, C, h, w]}`` (names and shapes in ``feature_info``)."""
        taps: dict[str, torch.Tensor] = {}
        return self._run(x, inject, taps), taps

    def _run(self, x, inject, taps):
        x = self._prepare_input(x)
        stage_taps = iter(self._stage_taps)
        received = None

        def record(x):
            nonlocal received
            received = next(stage_taps)
            if received and taps is not None:
                taps[received] = x
            return x

        skips = []
        for block in self.encoder:
            x = record(block(self._join(x, received, inject)))
            skips.append(x)
        x = record(self.neck(self._join(x, received, inject)))
        for j, block in enumerate(self.decoder):
            s = skips[N_SCALES - 1 - j]
            if self.cfg.skip_mode == "add":
                x = x + s
            elif self.cfg.skip_mode == "concat":
                x = torch.cat([x, s], dim=1)
            x = record(block(self._join(x, received, inject)))
        return self._finish(x)

    def output_scale(self) -> torch.Tensor:
        return self.log_scale.exp() if self.log_scale is not None else self.fixed_scale

    def _prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        want = self.size if self.direction == "SI" else self.image_size
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[-1] != x.shape[-2] or x.shape[-1] > self.size:
            raise ValueError(f"Generator({self.direction}) expects input [B, {self.in_channels}, {want}, {want}], "
                             f"got {list(x.shape)}")
        if self.direction == "SI" and x.shape[-1] != self.size:
            raise ValueError(f"Generator(SI) expects sinograms padded to [B, {self.in_channels}, {self.size}, "
                             f"{self.size}], got {list(x.shape)}")
        pad = self.size - x.shape[-1]
        if pad:  # IS: centre the image in the S×S working grid
            x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
        return x

    def _join(self, x, tap, inject):
        if tap is None:
            return x
        if tap in self.extra_channels:
            if inject is None or tap not in inject:
                raise ValueError(f"Generator built with extra_channels[{tap!r}] needs inject[{tap!r}]")
            t = inject[tap]
            want = (x.shape[0], self.extra_channels[tap], *x.shape[-2:])
            if tuple(t.shape) != want:
                raise ValueError(f"inject[{tap!r}] must have shape {list(want)}, got {list(t.shape)}")
            x = torch.cat([x, t.to(x.dtype)], dim=1)
        elif inject is not None and tap in inject:
            raise ValueError(f"inject[{tap!r}] given but the Generator was not built with extra_channels for it")
        return x

    def _finish(self, x):
        if self.direction == "SI" and self.image_size != self.size:
            o = (self.size - self.image_size) // 2
            x = x[..., o:o + self.image_size, o:o + self.image_size]
        x = self.final_activation(x)
        if self.normalize:  # per-sample L1 normalisation: the scale then sets the total
            x = x / (x.abs().flatten(1).sum(1).view(-1, 1, 1, 1) + 1e-8)
        return x * self.output_scale()

    def tap_shapes(self) -> dict[str, tuple[int, int, int]]:
        """(C, H, W) of every tap, without running the network."""
        return {name: info.shape for name, info in self.feature_info.items()}

    def scale_parameters(self) -> list[nn.Parameter]:
        return [self.log_scale] if self.log_scale is not None else []
