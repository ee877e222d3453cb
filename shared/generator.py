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

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

TAPS = ("enc144", "enc36", "enc9", "dec9", "dec36", "dec144")
LEVELS = (144, 36, 9)
ENC_TAP_BLOCKS = {0: "enc144", 2: "enc36", 4: "enc9"}  # encoder block → tap at its output
DEC_TAP_BLOCKS = {1: "dec36", 3: "dec144"}  # decoder block → tap at its output (dec9 is the neck)
ENC_INPUT_TAP = {1: "enc144", 3: "enc36"}  # encoder block → tap that feeds it (enc9 feeds the neck)
DEC_INPUT_TAP = {0: "dec9", 2: "dec36", 4: "dec144"}  # decoder block → tap that feeds it
N_SCALES = 5  # five stride-2 stages: S must be divisible by 32
NEGATIVE_SLOPE = 0.2

CHOICES = {
    "gen_neck": ("narrow", "medium", "wide"),
    "layer_norm": ("batch", "instance", "group", "none"),
    "pad_mode": ("zeros", "replicate"),
    "skip_mode": ("none", "add", "concat"),
    "exp_kernel": (3, 4),
    "gen_final_activ": ("none", "relu", "leaky_relu", "sigmoid", "tanh", "softplus", "elu"),
}
DIRECTION_KEYS = ("gen_neck", "gen_hidden_dim", "gen_mult", "gen_z_dim", "gen_fill", "layer_norm", "pad_mode",
                  "dropout", "skip_mode", "exp_kernel", "gen_final_activ", "normalize", "fixedScale",
                  "learnedScale_init", "output_scale_lr_mult")
SHARED_KEYS = ("gen_sino_size", "gen_image_size", "gen_sino_channels", "gen_image_channels")

FINAL_ACTIVATIONS = {
    "none": nn.Identity, "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(NEGATIVE_SLOPE),
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "softplus": nn.Softplus, "elu": nn.ELU,
}


class ConfigError(ValueError):
    """A missing or invalid configuration key; the message names the key."""


def channel_dims(hidden_dim: int, mult: float) -> list[int]:
    return [int(hidden_dim * mult ** (k ** 0.7)) for k in range(N_SCALES)]


def read_config(config: dict, direction: str) -> dict:
    """Validate and strip the direction prefix; raises ConfigError naming the offending key."""
    if direction not in ("SI", "IS"):
        raise ConfigError(f"direction must be 'SI' or 'IS', got {direction!r}")
    out = {}
    for key in DIRECTION_KEYS:
        full = f"{direction}_{key}"
        if full not in config:
            raise ConfigError(f"config is missing key {full!r}")
        out[key] = config[full]
    for key in SHARED_KEYS:
        if key not in config:
            raise ConfigError(f"config is missing key {key!r}")
        out[key] = config[key]

    def bad(key, why):
        name = key if key in SHARED_KEYS else f"{direction}_{key}"
        return ConfigError(f"config key {name!r}={out[key]!r}: {why}")

    for key, allowed in CHOICES.items():
        if out[key] not in allowed:
            raise bad(key, f"must be one of {list(allowed)}")
    for key in ("gen_hidden_dim", "gen_z_dim", "gen_sino_size", "gen_image_size", "gen_sino_channels",
                "gen_image_channels"):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 1:
            raise bad(key, "must be a positive integer")
    if isinstance(out["gen_fill"], bool) or not isinstance(out["gen_fill"], int) or out["gen_fill"] < 0:
        raise bad("gen_fill", "must be a non-negative integer")
    if not isinstance(out["gen_mult"], (int, float)) or out["gen_mult"] < 1:
        raise bad("gen_mult", "must be a number >= 1")
    if not isinstance(out["dropout"], (int, float)) or not 0 <= out["dropout"] < 1:
        raise bad("dropout", "must be in [0, 1)")
    if not isinstance(out["normalize"], bool):
        raise bad("normalize", "must be true or false")
    if out["gen_sino_size"] % 2 ** N_SCALES:
        raise bad("gen_sino_size", f"must be divisible by {2 ** N_SCALES}")
    if out["gen_image_size"] > out["gen_sino_size"]:
        raise bad("gen_image_size", f"must not exceed gen_sino_size={out['gen_sino_size']}")
    if (out["fixedScale"] is None) == (out["learnedScale_init"] is None):
        raise bad("fixedScale", f"exactly one of {direction}_fixedScale and {direction}_learnedScale_init must be "
                                f"set (the other null); got learnedScale_init={out['learnedScale_init']!r}")
    scale = out["fixedScale"] if out["fixedScale"] is not None else out["learnedScale_init"]
    if not isinstance(scale, (int, float)) or scale <= 0:
        raise bad("fixedScale" if out["fixedScale"] is not None else "learnedScale_init", "must be a positive number")
    if not isinstance(out["output_scale_lr_mult"], (int, float)) or out["output_scale_lr_mult"] < 0:
        raise bad("output_scale_lr_mult", "must be a non-negative number")
    return out


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
    def __init__(self, config: dict, direction: str = "SI", extra_channels: dict[str, int] | None = None):
        super().__init__()
        cfg = read_config(config, direction)
        extra = dict(extra_channels or {})
        unknown = set(extra) - set(TAPS)
        if unknown:
            raise ConfigError(f"extra_channels has unknown tap(s) {sorted(unknown)}; taps are {list(TAPS)}")
        self.direction, self.cfg, self.extra_channels = direction, cfg, extra
        self.size = cfg["gen_sino_size"]
        self.image_size = cfg["gen_image_size"]
        if direction == "SI":
            c_in, c_out = cfg["gen_sino_channels"], cfg["gen_image_channels"]
        else:
            c_in, c_out = cfg["gen_image_channels"], cfg["gen_sino_channels"]
        self.in_channels, self.out_channels = c_in, c_out
        dims = channel_dims(cfg["gen_hidden_dim"], cfg["gen_mult"])
        self.dims = dims
        kw = dict(norm=cfg["layer_norm"], pad_mode=cfg["pad_mode"], dropout=cfg["dropout"])
        fill = cfg["gen_fill"]
        skip = cfg["skip_mode"]

        # Encoder: block k takes the previous output (+ injected channels after a tap).
        self.encoder = nn.ModuleList()
        prev = c_in
        for k in range(N_SCALES):
            c = prev + extra.get(ENC_INPUT_TAP.get(k), 0)
            self.encoder.append(Block(ConvLayer(c, dims[k], 3, 2, 1, **kw), dims[k], fill, **kw))
            prev = dims[k]

        self.neck = self._build_neck(cfg["gen_neck"], self.size // 2 ** N_SCALES, dims[-1] + extra.get("enc9", 0), dims[-1], cfg["gen_z_dim"], kw)

        # Decoder block j upsamples from S/2^(5-j); its input is joined with the encoder output of
        # the same size (block 4-j) by the skip mode, then with any injected tensor.
        kernel = cfg["exp_kernel"]
        up = dict(kernel=kernel, stride=2, padding=1, transpose=True, output_padding=1 if kernel == 3 else 0)
        self.decoder = nn.ModuleList()
        prev = dims[-1]
        for j in range(N_SCALES):
            c = prev + (dims[N_SCALES - 1 - j] if skip == "concat" else 0)
            c += extra.get(DEC_INPUT_TAP.get(j), 0)
            if j < N_SCALES - 1:
                c_next = dims[N_SCALES - 2 - j]
                self.decoder.append(Block(ConvLayer(c, c_next, **up, **kw), c_next, fill, **kw))
                prev = c_next
            else:  # final block: linear (no norm/activation; the final activation follows)
                self.decoder.append(ConvLayer(c, c_out, **up, linear=True))

        self.final_activation = FINAL_ACTIVATIONS[cfg["gen_final_activ"]]()
        self.normalize = cfg["normalize"]
        if cfg["fixedScale"] is not None:
            self.register_buffer("fixed_scale", torch.tensor(float(cfg["fixedScale"])))
            self.log_scale = None
        else:
            self.log_scale = nn.Parameter(torch.tensor(math.log(float(cfg["learnedScale_init"]))))
        self.output_scale_lr_mult = float(cfg["output_scale_lr_mult"])
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

    def forward(self, x: torch.Tensor, return_taps: bool = False, inject: dict[str, torch.Tensor] | None = None):
        x = self._prepare_input(x)
        taps, skips = {}, []
        for k, block in enumerate(self.encoder):
            if k in ENC_INPUT_TAP:
                x = self._join(x, ENC_INPUT_TAP[k], inject)
            x = block(x)
            skips.append(x)
            if k in ENC_TAP_BLOCKS:
                taps[ENC_TAP_BLOCKS[k]] = x
        x = self.neck(self._join(x, "enc9", inject))
        taps["dec9"] = x
        skip_mode = self.cfg["skip_mode"]
        for j, block in enumerate(self.decoder):
            s = skips[N_SCALES - 1 - j]
            if skip_mode == "add":
                x = x + s
            elif skip_mode == "concat":
                x = torch.cat([x, s], dim=1)
            if j in DEC_INPUT_TAP:
                x = self._join(x, DEC_INPUT_TAP[j], inject)
            x = block(x)
            if j in DEC_TAP_BLOCKS:
                taps[DEC_TAP_BLOCKS[j]] = x
        out = self._finish(x)
        return (out, taps) if return_taps else out

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
        d, s = self.dims, self.size
        return {"enc144": (d[0], s // 2, s // 2), "enc36": (d[2], s // 8, s // 8), "enc9": (d[4], s // 32, s // 32),
                "dec9": (d[4], s // 32, s // 32), "dec36": (d[2], s // 8, s // 8), "dec144": (d[0], s // 2, s // 2)}

    def scale_parameters(self) -> list[nn.Parameter]:
        return [self.log_scale] if self.log_scale is not None else []
