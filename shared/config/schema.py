"""Typed configuration: the user's flat keys, parsed once into dataclasses (docs/DESIGN.md §7).

Configs stay flat dicts on disk, in checkpoints and in Ray Tune (``SI_gen_neck``, ``gen_lr``,
``inject_levels`` …).  Code that builds something parses them here, once: every default and every
allowed choice lives in this module, and each ``__post_init__`` holds the checks, so a bad value
fails with a :class:`ConfigError` naming the flat key.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from shared.errors import InputError

DIRECTIONS = ("SI", "IS")  # SI: sinogram → image (student); IS: image → sinogram (teacher)
# Tap levels, named by their spatial size at the reference working size S = 288 (S/2, S/8, S/32).
LEVELS = (144, 36, 9)
REFERENCE_SIZE = 288
N_SCALES = 5  # five stride-2 stages: S must be divisible by 2**5

CHOICES = {
    "gen_neck": ("narrow", "medium", "wide"),
    "layer_norm": ("batch", "instance", "group", "none"),
    "pad_mode": ("zeros", "replicate"),
    "skip_mode": ("none", "add", "concat", "conv"),
    "exp_kernel": (3, 4),
    "sup_base_criterion": ("MSELoss", "L1Loss", "SmoothL1Loss", "VarWeightedMSE"),
    "lr_schedule": ("none", "cosine"),
    "inject_routing": ("auto", "crosswise", "coflow", "IS_coflow", "SI_crosswise"),
    "inject_merge": ("scale", "mixer"),
    "feature_drop_mode": ("all_or_none", "per_channel"),
}
# ``gen_final_activ``: a torch.nn activation class name as their code writes it (built with torch's
# defaults: LeakyReLU slope 0.01), or None; FrozenFlow's older lower-case names keep their meaning.
ACTIVATIONS = ("ReLU", "LeakyReLU", "ELU", "Sigmoid", "Tanh", "Softplus", "SELU", "CELU", "GELU", "SiLU", "Mish",
               "ReLU6", "Hardtanh", "Hardsigmoid", "Hardswish", "LogSigmoid", "Softsign", "Tanhshrink", "PReLU")
NO_ACTIVATION = (None, "None", "none")
LEGACY_ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "softplus", "elu")  # leaky_relu: slope 0.2
DROPOUT_IF_TRUE = 0.5  # their ``SI_dropout: true``: element-wise dropout p = 0.5 after every conv layer


class ConfigError(InputError):
    """A missing or invalid configuration key; the message names the key."""


def _as_bool(value, key: str) -> bool:
    from .vocabulary import as_bool

    return as_bool(value, key)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    """A real, finite number (NaN and ±inf are never a valid setting)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def sino_channel_key(config: dict, direction: str) -> str:
    """The key giving the sinogram channels of a ``direction`` network: ``gen_sino_channels_SI`` (SI input) or
    ``gen_sino_channels_IS`` (IS output) when present, else the older shared ``gen_sino_channels``."""
    own = f"gen_sino_channels_{direction}"
    if own in config:
        return own
    if "gen_sino_channels" in config:
        return "gen_sino_channels"
    raise ConfigError(f"config is missing key {own!r} (or the older shared 'gen_sino_channels')")


def sino_channels(config: dict, direction: str) -> int:
    key = sino_channel_key(config, direction)
    if not _is_int(config[key]) or config[key] < 1:
        raise ConfigError(f"config key {key!r}={config[key]!r}: must be a positive integer")
    return config[key]


class _Flat:
    """Shared by the dataclasses below: flat-dict parsing with the key names the user writes."""

    PREFIX_FIELDS: tuple[str, ...] = ()  # fields stored with the direction prefix (SI_/IS_)

    def _key(self, name: str) -> str:
        prefix = getattr(self, "direction", None)
        return f"{prefix}_{name}" if prefix and name in self.PREFIX_FIELDS else name

    def _bad(self, name: str, why: str) -> ConfigError:
        return ConfigError(f"config key {self._key(name)!r}={getattr(self, name)!r}: {why}")

    def _choice(self, name: str):
        if getattr(self, name) not in CHOICES[name]:
            raise self._bad(name, f"must be one of {list(CHOICES[name])}")

    @classmethod
    def flat_keys(cls, direction: str | None = None) -> list[str]:
        return [f"{direction}_{f.name}" if direction and f.name in cls.PREFIX_FIELDS else f.name
                for f in fields(cls) if f.name != "direction"]

    @classmethod
    def _from(cls, d: dict, direction: str | None = None, *, required: bool):
        kw = {}
        for f in fields(cls):
            if f.name == "direction":
                continue
            key = f"{direction}_{f.name}" if direction and f.name in cls.PREFIX_FIELDS else f.name
            if key in d:
                kw[f.name] = d[key]
            elif required or f.default is dataclasses.MISSING:
                raise ConfigError(f"config is missing key {key!r}")
        return cls(direction=direction, **kw) if direction else cls(**kw)

    def to_flat(self) -> dict:
        return {self._key(f.name): getattr(self, f.name) for f in fields(self) if f.name != "direction"}


@dataclass(frozen=True)
class GeneratorConfig(_Flat):
    """One Generator: ``GeneratorConfig.from_flat(config, "SI")`` reads ``SI_*`` plus the shared sizes.

    Values are kept as the user wrote them (``dropout: "true"``, ``gen_final_activ: "LeakyReLU"``, both
    scale keys); the properties below give their meaning:

    * ``dropout``: true/false (or the strings) → element-wise dropout p = 0.5 after every conv layer, or
      none; a number (FrozenFlow's older form) → channel dropout (Dropout2d) at that rate;
    * ``normalize`` true: output and target are L1-normalised per sample over the region the loss sees
      and scaled by ``fixedScale`` (``learnedScale_init`` unused); false: the output scale is learned,
      starting at ``learnedScale_init`` (``fixedScale`` unused). With ``learnedScale_init`` null and
      normalize false the scale is fixed at ``fixedScale`` (FrozenFlow's older form);
    * ``gen_sino_channels_SI`` / ``_IS``: the SI input / IS output channels (else ``gen_sino_channels``).
    """

    direction: str
    gen_neck: str
    gen_hidden_dim: int
    gen_mult: float
    gen_z_dim: int
    gen_fill: int
    layer_norm: str
    pad_mode: str
    dropout: object
    skip_mode: str
    exp_kernel: int
    gen_final_activ: object
    normalize: object
    fixedScale: float | None = None
    learnedScale_init: float | None = None
    output_scale_lr_mult: float | None = None  # None: 1
    gen_sino_size: int = REFERENCE_SIZE
    gen_image_size: int = 180
    gen_image_channels: int = 1
    sino_channels: int = 1  # resolved from gen_sino_channels_SI/_IS/gen_sino_channels by from_flat

    PREFIX_FIELDS = ("gen_neck", "gen_hidden_dim", "gen_mult", "gen_z_dim", "gen_fill", "layer_norm", "pad_mode",
                     "dropout", "skip_mode", "exp_kernel", "gen_final_activ", "normalize", "fixedScale",
                     "learnedScale_init", "output_scale_lr_mult")
    OPTIONAL = ("fixedScale", "learnedScale_init", "output_scale_lr_mult", "gen_image_channels")

    @classmethod
    def from_flat(cls, config: dict, direction: str) -> "GeneratorConfig":
        if direction not in DIRECTIONS:
            raise ConfigError(f"direction must be one of {list(DIRECTIONS)}, got {direction!r}")
        kw = {}
        for f in fields(cls):
            if f.name in ("direction", "sino_channels"):
                continue
            key = f"{direction}_{f.name}" if f.name in cls.PREFIX_FIELDS else f.name
            if key in config:
                kw[f.name] = config[key]
            elif f.name not in cls.OPTIONAL:
                raise ConfigError(f"config is missing key {key!r}")
        return cls(direction=direction, sino_channels=sino_channels(config, direction), **kw)

    @classmethod
    def flat_keys(cls, direction: str | None = None) -> list[str]:
        keys = [k for k in super().flat_keys(direction) if k != "sino_channels"]
        return keys + [f"gen_sino_channels_{direction}"]

    def to_flat(self) -> dict:
        out = {k: v for k, v in super().to_flat().items() if k != "sino_channels" and not
               (k.endswith("output_scale_lr_mult") and v is None)}
        return {**out, f"gen_sino_channels_{self.direction}": self.sino_channels}

    def __post_init__(self):
        for name in ("gen_neck", "layer_norm", "pad_mode", "skip_mode", "exp_kernel"):
            self._choice(name)
        a = self.gen_final_activ
        if not (a in NO_ACTIVATION or a in ACTIVATIONS or a in LEGACY_ACTIVATIONS):
            raise self._bad("gen_final_activ", f"must be None or a torch.nn activation name ({', '.join(ACTIVATIONS[:6])}, …)")
        for name in ("gen_hidden_dim", "gen_z_dim", "gen_sino_size", "gen_image_size", "gen_image_channels"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise self._bad(name, "must be a positive integer")
        if not _is_int(self.gen_fill) or self.gen_fill < 0:
            raise self._bad("gen_fill", "must be a non-negative integer")
        if not _is_number(self.gen_mult) or self.gen_mult < 1:
            raise self._bad("gen_mult", "must be a number >= 1")
        from .vocabulary import is_bool

        if not is_bool(self.dropout) and (not _is_number(self.dropout) or not 0 <= self.dropout < 1):
            raise self._bad("dropout", "must be true or false (p = 0.5 when true), or a rate in [0, 1)")
        _as_bool(self.normalize, self._key("normalize"))
        if self.gen_sino_size % 2 ** N_SCALES:
            raise self._bad("gen_sino_size", f"must be divisible by {2 ** N_SCALES}")
        if self.gen_image_size > self.gen_sino_size:
            raise self._bad("gen_image_size", f"must not exceed gen_sino_size={self.gen_sino_size}")
        kind, key = self.scale_rule
        if not _is_number(getattr(self, key)) or getattr(self, key) <= 0:
            raise self._bad(key, f"must be a positive number (the {kind} output scale)")
        lr_mult = self.output_scale_lr_mult
        if kind == "learned" and lr_mult is not None and (not _is_number(lr_mult) or lr_mult < 0):
            raise self._bad("output_scale_lr_mult", "must be a non-negative number")

    @property
    def normalizes(self) -> bool:
        return _as_bool(self.normalize, self._key("normalize"))

    @property
    def scale_rule(self) -> tuple[str, str]:
        """(``fixed`` | ``learned`` | ``normalized``, the scale key that applies) by their rule."""
        fixed, learned = self.fixedScale is not None, self.learnedScale_init is not None
        if not (fixed or learned):
            raise ConfigError(f"config is missing key {self._key('learnedScale_init')!r} (or "
                              f"{self._key('fixedScale')!r}): the output scale")
        if self.normalizes:
            return ("normalized", "fixedScale") if fixed else ("learned", "learnedScale_init")  # the latter: older form
        return ("learned", "learnedScale_init") if learned else ("fixed", "fixedScale")

    @property
    def unused_keys(self) -> dict[str, str]:
        """Scale keys their rule does not use (listed once at start)."""
        kind, key = self.scale_rule
        out = {}
        other = "learnedScale_init" if key == "fixedScale" else "fixedScale"
        if getattr(self, other) is not None:
            why = (f"{self._key('normalize')} is true: the fixed scale applies" if self.normalizes else
                   f"{self._key('normalize')} is false: the scale is learned from {self._key('learnedScale_init')}")
            out[self._key(other)] = why
        if kind != "learned" and self.output_scale_lr_mult is not None:
            out[self._key("output_scale_lr_mult")] = "the output scale is fixed"
        return out

    @property
    def dropout_rate(self) -> tuple[float, bool]:
        """(p, element-wise): their boolean → (0.5 or 0, True); FrozenFlow's older number → (p, False)."""
        from .vocabulary import is_bool

        if is_bool(self.dropout):
            return (DROPOUT_IF_TRUE if _as_bool(self.dropout, self._key("dropout")) else 0.0), True
        return float(self.dropout), False

    @property
    def in_channels(self) -> int:
        return self.sino_channels if self.direction == "SI" else self.gen_image_channels

    @property
    def out_channels(self) -> int:
        return self.gen_image_channels if self.direction == "SI" else self.sino_channels


@dataclass(frozen=True)
class TrainConfig(_Flat):
    """The supervised-training keys (``config_RAY_SUP``), as the researcher writes them."""

    batch_base2_exponent: int
    gen_lr: float
    gen_b1: float
    gen_b2: float
    sup_base_criterion: str
    lr_schedule: str = "none"

    @classmethod
    def from_flat(cls, config: dict) -> "TrainConfig":
        from .vocabulary import to_stored

        return cls._from(to_stored(config), required=False)

    def __post_init__(self):
        if not _is_int(self.batch_base2_exponent) or not 0 <= self.batch_base2_exponent <= 16:
            raise self._bad("batch_base2_exponent", "must be an integer in 0..16 (batch = 2**k)")
        if not _is_number(self.gen_lr) or self.gen_lr <= 0:
            raise self._bad("gen_lr", "must be a positive number")
        for name in ("gen_b1", "gen_b2"):
            if not _is_number(getattr(self, name)) or not 0 <= getattr(self, name) < 1:
                raise self._bad(name, "must be in [0, 1)")
        self._choice("sup_base_criterion")
        self._choice("lr_schedule")

    @property
    def batch_size(self) -> int:
        return 2 ** self.batch_base2_exponent


# Per teacher direction: the routing whose stages see the same domain, and the one that does not (an ablation,
# named for the teacher it routes: an IS teacher routed co-flow, an SI teacher routed crosswise).
PAIRED_ROUTING = {"IS": "crosswise", "SI": "coflow"}
SWAPPED_ROUTING = {"IS": "IS_coflow", "SI": "SI_crosswise"}


@dataclass(frozen=True)
class InjectionConfig(_Flat):
    """The student's feature-injection keys (``config_RAY_DUAL``), with the ablation controls.

    ``inject_routing`` (docs/DESIGN.md §6) pairs each teacher stage with the student stage that sees the
    same domain: ``crosswise`` for an IS teacher (image → sinogram, e.g. today's attenuation teacher):
    teacher enc{L} → student dec{L} (``inject_enc_to_dec``) and teacher dec{L} → student enc{L}
    (``inject_dec_to_enc``) for each L in ``inject_levels``; ``coflow`` for an SI teacher (sinogram →
    image, as the student): enc{L} → enc{L}, dec{L} → dec{L}. ``auto`` (the default) is the one that pairs
    with the store's teacher, and is resolved when the student meets its store (``routed``). The other
    two are ablations named for what they are: ``IS_coflow`` (an IS teacher routed co-flow, which
    FrozenFlow's ``coflow`` meant before teacher kinds) and ``SI_crosswise``. The two toggles keep naming
    the *teacher's* side (its encoder's / decoder's features), so one ablation grid serves all.

    ``inject_merge``: ``scale`` (a trainable (C,1,1) scale per injected tensor, then the receiver's
    convolution widened by a side convolution) or ``mixer`` (a 1×1 convolution over [x, f] back to the
    receiver's input channels, docs/DESIGN.md §6). Feature dropout (training only): with probability
    ``feature_drop_at(epoch)`` — cosine from ``feature_drop_max`` at the first epoch to
    ``feature_drop_min`` at the last — ``all_or_none`` zeroes every injected tensor of a batch together,
    ``per_channel`` each channel of each sample independently; 0/0 (the default) draws nothing.
    """

    inject_levels: tuple[int, ...] = LEVELS
    inject_enc_to_dec: bool = True
    inject_dec_to_enc: bool = True
    feature_scale_init: float = 0.1
    feature_scale_lr_mult: float = 1.0
    feature_scale_trainable: bool = True  # control: False with init 0 = same channels, no signal
    shuffle_features: bool = False  # control: another sample's features
    atten_channel: bool = False  # control: the analytic attenuation sinogram as an extra input channel
    inject_routing: str = "auto"
    inject_merge: str = "scale"
    feature_drop_max: float = 0.0
    feature_drop_min: float = 0.0
    feature_drop_mode: str = "all_or_none"

    @classmethod
    def from_flat(cls, config: dict) -> "InjectionConfig":
        return cls._from(config, required=False)

    def __post_init__(self):
        levels = self.inject_levels
        if not isinstance(levels, (list, tuple)) or any(not _is_int(lv) or lv not in LEVELS for lv in levels):
            raise self._bad("inject_levels", f"must be a list drawn from {list(LEVELS)}")
        object.__setattr__(self, "inject_levels", tuple(sorted(set(levels), reverse=True)))
        for name in ("inject_enc_to_dec", "inject_dec_to_enc", "feature_scale_trainable", "shuffle_features",
                     "atten_channel"):
            if not isinstance(getattr(self, name), bool):
                raise self._bad(name, "must be true or false")
        if self.inject_levels and not (self.inject_enc_to_dec or self.inject_dec_to_enc):
            raise self._bad("inject_dec_to_enc", f"inject_levels={list(self.inject_levels)} needs at least one "
                                                 "direction (inject_enc_to_dec or inject_dec_to_enc true); for the "
                                                 "plain student set inject_levels=[] (--inject none)")
        self._choice("inject_routing")
        self._choice("inject_merge")
        self._choice("feature_drop_mode")
        for name in ("feature_drop_max", "feature_drop_min"):
            if not _is_number(getattr(self, name)) or not 0 <= getattr(self, name) <= 1:
                raise self._bad(name, "must be a probability in [0, 1]")
        if self.feature_drop_min > self.feature_drop_max:
            raise self._bad("feature_drop_min", f"must not exceed feature_drop_max={self.feature_drop_max!r} "
                                                f"(the schedule runs from max down to min)")
        if not _is_number(self.feature_scale_init):
            raise self._bad("feature_scale_init", "must be a number")
        if not _is_number(self.feature_scale_lr_mult) or self.feature_scale_lr_mult < 0:
            raise self._bad("feature_scale_lr_mult", "must be a non-negative number")

    def feature_drop_at(self, epoch: int, epochs: int) -> float:
        """The dropout probability of epoch ``epoch`` (0-based) of ``epochs``: cosine from max to min (a
        Tune trial reports once per epoch, so while tuning the schedule runs over its reports)."""
        hi, lo = float(self.feature_drop_max), float(self.feature_drop_min)
        if epochs <= 1:
            return hi
        return lo + (hi - lo) * 0.5 * (1 + math.cos(math.pi * min(epoch, epochs - 1) / (epochs - 1)))

    def routed(self, teacher_direction: str) -> "InjectionConfig":
        """This config for a teacher of ``teacher_direction``: ``auto`` resolved to the routing that pairs
        with it; a routing that pairs with the other direction is refused, naming the ablation that means it."""
        r, other = self.inject_routing, "SI" if teacher_direction == "IS" else "IS"
        if r == "auto":
            return dataclasses.replace(self, inject_routing=PAIRED_ROUTING[teacher_direction])
        if r == PAIRED_ROUTING[other] or r == SWAPPED_ROUTING[other]:
            raise self._bad("inject_routing", f"pairs with an {other} teacher, but the store's teacher runs "
                                              f"{teacher_direction}; use auto ({PAIRED_ROUTING[teacher_direction]}) "
                                              f"or, as an ablation, {SWAPPED_ROUTING[teacher_direction]}")
        return self

    @property
    def plan(self) -> dict[str, str]:
        """student tap → teacher tap (``auto``, before ``routed``: as for today's IS teacher)."""
        plan = {}
        cross = self.inject_routing in ("auto", "crosswise", "SI_crosswise")
        for lv in self.inject_levels:
            if self.inject_enc_to_dec:
                plan[f"dec{lv}" if cross else f"enc{lv}"] = f"enc{lv}"
            if self.inject_dec_to_enc:
                plan[f"enc{lv}" if cross else f"dec{lv}"] = f"dec{lv}"
        return plan

    def to_flat(self) -> dict:
        return {**super().to_flat(), "inject_levels": list(self.inject_levels)}


TASKS = ("teacher", "student")
# The sizes FrozenFlow pads and crops to (shared.models.network.build); every model gets them too.
SIZE_KEYS = ("gen_sino_size", "gen_image_size", "gen_image_channels")
CHANNEL_KEYS = ("gen_sino_channels", "gen_sino_channels_SI", "gen_sino_channels_IS")
TASK_DIRECTION = {"teacher": "IS", "student": "SI"}  # the defaults; a teacher may run SI (shared.data.views)


def _direction(task: str, direction: str | None) -> str:
    if task not in TASKS:
        raise ConfigError(f"task must be one of {list(TASKS)}, got {task!r}")
    if direction is None:
        return TASK_DIRECTION[task]
    if direction not in ("IS", "SI") or (task == "student" and direction != "SI"):
        raise ConfigError(f"a {task} runs {'SI' if task == 'student' else 'IS or SI'}, got direction {direction!r}")
    return direction


@dataclass(frozen=True)
class RunConfig:
    """One run's config, parsed once where it enters — ``fit``, a tune trial, a checkpoint — and handed
    inward as this object: ``flat`` is the researcher's dict in their words (what their class reads and
    what config.json / the checkpoints hold), ``train`` and ``injection`` are FrozenFlow's typed parts
    (``injection`` for a student only); ``direction`` the network's (a teacher's IS by default, SI for
    the sinogram-side teacher kinds)."""

    flat: dict
    task: str
    train: TrainConfig
    injection: InjectionConfig | None = None
    direction: str = "IS"

    @classmethod
    def parse(cls, config: dict, task: str, direction: str | None = None) -> "RunConfig":
        from .vocabulary import to_stored

        d = _direction(task, direction)
        flat = to_stored(config)
        return cls(flat, task, TrainConfig.from_flat(flat),
                   InjectionConfig.from_flat(flat) if task == "student" else None, d)

    def routed(self, teacher_direction: str) -> "RunConfig":
        """The student's config for a teacher of ``teacher_direction`` (``InjectionConfig.routed``). The flat
        dict stays in the user's words (``auto``, or no key at all); the student's checkpoint records the
        teacher's kind and the routing resolved (``meta["routing"]``), and ``load_student`` resolves again."""
        return dataclasses.replace(self, injection=self.injection.routed(teacher_direction))

    @property
    def image_size(self) -> int:
        return int(self.flat["gen_image_size"])

    @property
    def sino_size(self) -> int:
        return int(self.flat["gen_sino_size"])

    @property
    def sino_channels(self) -> int:
        return sino_channels(self.flat, self.direction)

    @property
    def sino_channel_key(self) -> str:
        return sino_channel_key(self.flat, self.direction)

    @property
    def normalized_scale(self) -> float | None:
        return normalized_scale(self.flat, self.direction)


def frozenflow_keys(task: str, direction: str | None = None) -> set[str]:
    """The keys FrozenFlow itself consumes (sizes, training, injection, the target's normalisation);
    a user's class owns the rest."""
    d = _direction(task, direction)
    keys = set(SIZE_KEYS) | set(CHANNEL_KEYS) | set(TrainConfig.flat_keys()) | {"batch_size", "loss"}
    keys |= {f"{d}_normalize", f"{d}_fixedScale"}
    return keys | set(InjectionConfig.flat_keys()) if task == "student" else keys


def check_sizes(config: dict, direction: str) -> None:
    for key in SIZE_KEYS:
        if key not in config:
            raise ConfigError(f"config is missing key {key!r} (FrozenFlow pads and crops to it)")
        if not _is_int(config[key]) or config[key] < 1:
            raise ConfigError(f"config key {key!r}={config[key]!r}: must be a positive integer")
    sino_channels(config, direction)
    if config["gen_image_size"] > config["gen_sino_size"]:
        raise ConfigError(f"config key 'gen_image_size'={config['gen_image_size']!r}: must not exceed "
                          f"gen_sino_size={config['gen_sino_size']}")


def task_keys(task: str, direction: str | None = None) -> set[str]:
    """Every FrozenFlow key a config of ``task`` may hold with the built-in Generator (the researcher's
    other keys are classified by ``vocabulary.classify``; a student's frozen network's by ``FROZEN_``)."""
    d = _direction(task, direction)
    keys = set(GeneratorConfig.flat_keys(d)) | set(CHANNEL_KEYS) | set(TrainConfig.flat_keys())
    return keys | set(InjectionConfig.flat_keys()) if task == "student" else keys


def teacher_keys() -> set[str]:
    """The built-in teacher's own keys (``IS_…``): in the original convention a student's dict carries them
    unprefixed beside its ``SI_`` keys (now ``FROZEN_IS_…``; both accepted)."""
    return {k for k in GeneratorConfig.flat_keys("IS") if k.startswith("IS_")}


def check_override_keys(overrides: dict, task: str, builtin: bool = True, direction: str | None = None,
                        teacher_kind: str = "attenuation") -> None:
    """``--set KEY=…`` keys must be keys of ``task`` (checked before any file is read); with a user's class
    (``builtin=False``) any key may be theirs, and ``load_config`` checks it exists."""
    from .vocabulary import FROZEN, classify

    frozen = sorted(k for k in overrides if k.startswith(FROZEN) or (task == "student" and k in teacher_keys()))
    if frozen:
        raise ConfigError(f"--set {frozen[0]}: describes the frozen network, which comes from its feature store; "
                          f"train and export another teacher to change it")
    if not builtin:
        return
    legacy = {"batch_size", "loss"}  # FrozenFlow's older names (vocabulary.to_stored)
    unknown = sorted(set(overrides) - task_keys(task, direction) - legacy
                     - set(classify(overrides, task, direction, teacher_kind)))
    if unknown:
        raise ConfigError(f"--set {unknown[0]}: not a {task} config key")


def check_task_config(config: dict, task: str, builtin: bool = True, direction: str | None = None,
                      teacher_kind: str = "attenuation") -> tuple[RunConfig, dict[str, str]]:
    """Parse a resolved config of ``task`` completely, once: returns the parsed ``RunConfig`` and the keys
    that are the user's but do not apply to this run (key → why), to be listed once. Unknown keys are
    refused (nothing is ignored).

    With a user's class (``builtin=False``) only FrozenFlow's own keys are parsed here; the rest go to
    the class's factory, which validates them, and those it never reads are listed once."""
    from .vocabulary import FROZEN, classify, to_stored

    config = to_stored(config)
    d = _direction(task, direction)
    unused = classify(config, task, d, teacher_kind)
    if not builtin:
        check_sizes(config, d)
        run = RunConfig.parse(config, task, d)
        return run, {**unused, **_idle_injection_keys(config, run)}
    legacy_teacher = {k for k in config if k.startswith("IS_")} if task == "student" else set()
    unknown = sorted(k for k in set(config) - task_keys(task, d) - set(unused) - legacy_teacher
                     if not k.startswith(FROZEN))
    if unknown:
        raise ConfigError(f"config key {unknown[0]!r} is not a {task} key"
                          + (f" (also: {', '.join(unknown[1:])})" if unknown[1:] else ""))
    gen = GeneratorConfig.from_flat(config, d)
    unused.update(gen.unused_keys)
    other = "gen_sino_channels"
    if other in config and f"gen_sino_channels_{d}" in config:
        unused[other] = f"gen_sino_channels_{d} applies"
    other_dir = f"gen_sino_channels_{'SI' if d == 'IS' else 'IS'}"
    if other_dir in config:
        unused[other_dir] = f"the {'SI' if d == 'IS' else 'IS'} network's"
    run = RunConfig.parse(config, task, d)
    if task == "student":
        if teacher_keys() <= legacy_teacher:  # the original convention: a built-in teacher's keys beside SI_
            GeneratorConfig.from_flat({"gen_sino_channels_IS": 1, **config}, "IS")  # its output: one plane
    return run, {**unused, **_idle_injection_keys(config, run)}


def _idle_injection_keys(config: dict, run: RunConfig) -> dict[str, str]:
    """A student's injection keys set away from their defaults that shape nothing in this run (listed once
    as not used; a default value does nothing either way)."""
    inj = run.injection
    if inj is None:
        return {}
    default = InjectionConfig()
    if not inj.plan:
        idle, why = [k for k in InjectionConfig.flat_keys() if k not in ("inject_levels", "atten_channel")], "nothing injected"
    elif inj.feature_drop_max == 0:
        idle, why = ["feature_drop_min", "feature_drop_mode"], "feature_drop_max is 0"
    else:
        return {}
    return {k: why for k in idle if k in config and config[k] != getattr(default, k)}


def normalized_scale(config: dict, direction: str) -> float | None:
    """Their ``normalize`` rule for the target: with ``{direction}_normalize`` true and a ``fixedScale``, the
    target (and the built-in's output) is L1-normalised per sample and scaled by it; else None."""
    key = f"{direction}_normalize"
    if key not in config or not _as_bool(config[key], key) or config.get(f"{direction}_fixedScale") is None:
        return None
    return float(config[f"{direction}_fixedScale"])


def parse_inject(text: str) -> list[int]:
    """``--inject 144,36,9`` / ``--inject none`` → levels."""
    text = str(text).strip().lower()
    if text in ("none", "off"):
        return []
    if not text.strip(", "):
        raise ConfigError("--inject names no level; use --inject none for the plain student "
                          f"or a comma list drawn from {list(LEVELS)}")
    try:
        levels = sorted({int(x) for x in text.split(",") if x.strip()}, reverse=True)
    except ValueError:
        levels = [-1]
    if any(lv not in LEVELS for lv in levels):
        raise ConfigError(f"--inject must be 'none' or a comma list drawn from {list(LEVELS)}, got {text!r}")
    return levels
