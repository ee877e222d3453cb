"""The one config-driven U-Net-like Generator, for both directions (FrozenFlow's built-in model).

``Generator(config, "SI")`` maps an S×S sinogram to an S×S image, ``Generator(config, "IS")`` an S×S
image to an S×S sinogram; the tasks pad their inputs to S×S and crop the outputs
(``shared.models.Network``), as they do for any user's class.
Config keys carry the direction prefix (``SI_gen_neck`` …) plus shared keys
(``gen_sino_size``, ``gen_image_size``, ``gen_sino_channels``, ``gen_image_channels``).

Layout at working size S (288 by default):
  encoder  5 stride-2 blocks S→S/2→…→S/32 (288→144→72→36→18→9), dim_k = int(h·mult^(k^0.7))
  neck     at S/32: narrow (→5→3→1×1 z_dim→3→5→9), medium (→5×5 convs→9), wide (stays 9×9)
  decoder  5 transposed-conv blocks S/32→…→S, the last one linear
Its taps and receivers are declared once, as module paths, in ``shared/models/builtin.yaml``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from shared.config.schema import N_SCALES, NO_ACTIVATION, ConfigError, GeneratorConfig
from shared.errors import InputError

__all__ = ["Generator", "GeneratorConfig", "ConfigError", "channel_dims", "final_activation"]

NEGATIVE_SLOPE = 0.2

LEGACY_ACTIVATIONS = {  # FrozenFlow's older lower-case names, with their old meaning (leaky_relu: slope 0.2)
    "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(NEGATIVE_SLOPE), "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
    "softplus": nn.Softplus, "elu": nn.ELU,
}


def final_activation(name) -> nn.Module:
    """``gen_final_activ``: None → identity; a torch.nn class name → that class with torch's defaults (their
    code: ``LeakyReLU`` has slope 0.01); an older FrozenFlow name → its old meaning."""
    if name in NO_ACTIVATION:
        return nn.Identity()
    if name in LEGACY_ACTIVATIONS:
        return LEGACY_ACTIVATIONS[name]()
    return getattr(nn, name)()


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
    """conv → norm → LeakyReLU → dropout (``linear=True``: the conv alone); ``dropout`` = (p, element-wise)."""

    def __init__(self, c_in, c_out, kernel, stride=1, padding=0, *, norm="none", pad_mode="zeros",
                 dropout=(0.0, False), transpose=False, output_padding=0, linear=False):
        if transpose:
            conv = nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding, output_padding=output_padding)
        else:
            conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, padding_mode=pad_mode)
        layers = [conv]
        if not linear:
            layers += [norm_layer(norm, c_out), nn.LeakyReLU(NEGATIVE_SLOPE)]
            p, elementwise = dropout  # their boolean: element-wise; FrozenFlow's older rate: whole channels
            if p > 0:
                layers.append(nn.Dropout(p) if elementwise else nn.Dropout2d(p))
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
    """``Generator(config, "SI")``: ``config`` is the flat dict (or a parsed :class:`GeneratorConfig`)."""

    def __init__(self, config: dict | GeneratorConfig, direction: str = "SI"):
        super().__init__()
        cfg = config if isinstance(config, GeneratorConfig) else GeneratorConfig.from_flat(config, direction)
        if cfg.direction != direction:
            raise ConfigError(f"a {cfg.direction} config cannot build a {direction} Generator")
        self.direction, self.cfg = direction, cfg
        self.size = cfg.gen_sino_size
        self.in_channels, self.out_channels = cfg.in_channels, cfg.out_channels
        self.dims = dims = channel_dims(cfg.gen_hidden_dim, cfg.gen_mult)
        kw = dict(norm=cfg.layer_norm, pad_mode=cfg.pad_mode, dropout=cfg.dropout_rate)
        fill = cfg.gen_fill

        # Encoder: five stride-2 blocks S → S/32.
        self.encoder = nn.ModuleList()
        prev = self.in_channels
        for k in range(N_SCALES):
            self.encoder.append(Block(ConvLayer(prev, dims[k], 3, 2, 1, **kw), dims[k], fill, **kw))
            prev = dims[k]
        self.neck = self._build_neck(cfg.gen_neck, self.size // 2 ** N_SCALES, dims[-1], dims[-1], cfg.gen_z_dim, kw)

        # Decoder block j upsamples S/2^(5-j) → S/2^(4-j); its input is joined with the encoder output of
        # the same size (block 4-j) by the skip mode.
        up = dict(kernel=cfg.exp_kernel, stride=2, padding=1, transpose=True,
                  output_padding=1 if cfg.exp_kernel == 3 else 0)
        self.decoder = nn.ModuleList()
        # skip_mode conv: each skip passes a learned 1×1 convolution, then is added
        self.skip_convs = nn.ModuleList([nn.Conv2d(dims[N_SCALES - 1 - j], dims[N_SCALES - 1 - j], 1)
                                         for j in range(N_SCALES)]) if cfg.skip_mode == "conv" else None
        prev = dims[-1]
        for j in range(N_SCALES):
            c_next = dims[N_SCALES - 2 - j] if j < N_SCALES - 1 else self.out_channels
            c_in = prev + (dims[N_SCALES - 1 - j] if cfg.skip_mode == "concat" else 0)
            if j < N_SCALES - 1:
                self.decoder.append(Block(ConvLayer(c_in, c_next, **up, **kw), c_next, fill, **kw))
            else:  # final block: linear (no norm/activation; the final activation follows)
                self.decoder.append(ConvLayer(c_in, c_next, **up, linear=True))
            prev = c_next

        self.final_activation = final_activation(cfg.gen_final_activ)
        kind, key = cfg.scale_rule
        # normalized (their normalize = true): FrozenFlow normalises output and target over the region the
        # loss sees (shared.train.loop.OutputNorm), so the network returns the activation's output as is.
        # learned with normalize true is FrozenFlow's older form: normalised here, over the whole S×S.
        self.normalize = cfg.normalizes and kind == "learned"
        if kind == "learned":
            self.log_scale = nn.Parameter(torch.tensor(math.log(float(cfg.learnedScale_init))))
        else:
            self.register_buffer("fixed_scale", torch.tensor(1.0 if kind == "normalized" else float(cfg.fixedScale)))
            self.log_scale = None
        self.output_scale_lr_mult = 1.0 if cfg.output_scale_lr_mult is None else float(cfg.output_scale_lr_mult)
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
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_channels, self.size, self.size):
            raise InputError(f"Generator({self.direction}) expects input [B, {self.in_channels}, {self.size}, "
                             f"{self.size}], got {list(x.shape)}")
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = self.neck(x)
        for j, block in enumerate(self.decoder):
            s = skips[N_SCALES - 1 - j]
            if self.cfg.skip_mode == "add":
                x = x + s
            elif self.cfg.skip_mode == "conv":
                x = x + self.skip_convs[j](s)
            elif self.cfg.skip_mode == "concat":
                x = torch.cat([x, s], dim=1)
            x = block(x)
        x = self.final_activation(x)
        if self.normalize:  # per-sample L1 normalisation: the scale then sets the total
            x = x / (x.abs().flatten(1).sum(1).view(-1, 1, 1, 1) + 1e-8)
        return x * self.output_scale()

    def output_scale(self) -> torch.Tensor:
        return self.log_scale.exp() if self.log_scale is not None else self.fixed_scale

    def param_groups(self) -> list[dict]:
        """The learnable output scale trains at LR × output_scale_lr_mult (the optional contract hook)."""
        if self.log_scale is None:
            return []
        return [{"params": [self.log_scale], "lr_mult": self.output_scale_lr_mult, "name": "output_scale"}]
