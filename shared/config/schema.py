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

DIRECTIONS = ("SI", "IS")  # SI: sinogram → image (student); IS: image → sinogram (teacher)
# Tap levels, named by their spatial size at the reference working size S = 288 (S/2, S/8, S/32).
LEVELS = (144, 36, 9)
REFERENCE_SIZE = 288
N_SCALES = 5  # five stride-2 stages: S must be divisible by 2**5

CHOICES = {
    "gen_neck": ("narrow", "medium", "wide"),
    "layer_norm": ("batch", "instance", "group", "none"),
    "pad_mode": ("zeros", "replicate"),
    "skip_mode": ("none", "add", "concat"),
    "exp_kernel": (3, 4),
    "gen_final_activ": ("none", "relu", "leaky_relu", "sigmoid", "tanh", "softplus", "elu"),
    "loss": ("mse", "l1", "smooth_l1", "var_weighted_mse"),
    "lr_schedule": ("none", "cosine"),
    "inject_routing": ("crosswise", "coflow"),
}

# The user's own vocabulary (their configs and search spaces), accepted as written and stored in
# the one canonical form above: ``canonical(config)``.
LOSS_NAMES = {"MSELoss": "mse", "L1Loss": "l1", "SmoothL1Loss": "smooth_l1", "VarWeightedMSE": "var_weighted_mse"}
ACTIVATION_NAMES = {None: "none", "None": "none", "ReLU": "relu", "LeakyReLU": "leaky_relu", "ELU": "elu",
                    "Sigmoid": "sigmoid", "Tanh": "tanh", "Softplus": "softplus"}
DROPOUT_IF_TRUE = 0.1  # ``SI_dropout: true`` → this rate (the search space's non-zero choice)
ALIAS_TARGETS = {"batch_base2_exponent": "batch_size", "sup_base_criterion": "loss"}  # user key → stored key
ALIAS_KEYS = tuple(ALIAS_TARGETS)


class ConfigError(ValueError):
    """A missing or invalid configuration key; the message names the key."""


def canonical(config: dict) -> dict:
    """The user's spellings → the stored form (a new dict); two keys that disagree are an error.

    ``batch_base2_exponent: k`` → ``batch_size: 2**k``; ``sup_base_criterion: MSELoss | L1Loss |
    SmoothL1Loss | VarWeightedMSE`` → ``loss``; boolean ``SI_dropout``/``IS_dropout`` → 0.1 or 0.0;
    final activations ``None``/null, ``ReLU``, ``LeakyReLU``, ``ELU``, ``Sigmoid``, ``Tanh``,
    ``Softplus`` → the lower-case names.  Canonical values pass through unchanged.
    """
    c = dict(config)
    if "batch_base2_exponent" in c:
        k = c.pop("batch_base2_exponent")
        if not _is_int(k) or not 0 <= k <= 16:
            raise ConfigError(f"config key 'batch_base2_exponent'={k!r}: must be an integer in 0..16 (batch = 2**k)")
        if "batch_size" in c and c["batch_size"] != 2 ** k:
            raise ConfigError(f"config keys 'batch_size'={c['batch_size']!r} and 'batch_base2_exponent'={k} "
                              f"disagree (2**{k} = {2 ** k}); give one of them")
        c["batch_size"] = 2 ** k
    if "sup_base_criterion" in c:
        v = c.pop("sup_base_criterion")
        if not isinstance(v, str) or v not in LOSS_NAMES:
            raise ConfigError(f"config key 'sup_base_criterion'={v!r}: must be one of {list(LOSS_NAMES)}")
        if "loss" in c and c["loss"] != LOSS_NAMES[v]:
            raise ConfigError(f"config keys 'loss'={c['loss']!r} and 'sup_base_criterion'={v!r} disagree; "
                              f"give one of them")
        c["loss"] = LOSS_NAMES[v]
    for d in DIRECTIONS:
        key = f"{d}_dropout"
        if isinstance(c.get(key), bool):
            c[key] = DROPOUT_IF_TRUE if c[key] else 0.0
        key = f"{d}_gen_final_activ"
        if key in c and (c[key] is None or isinstance(c[key], str)) and c[key] in ACTIVATION_NAMES:
            c[key] = ACTIVATION_NAMES[c[key]]
    return c


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    """A real, finite number (NaN and ±inf are never a valid setting)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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
    """One Generator: ``GeneratorConfig.from_flat(config, "SI")`` reads ``SI_*`` plus the shared sizes."""

    direction: str
    gen_neck: str
    gen_hidden_dim: int
    gen_mult: float
    gen_z_dim: int
    gen_fill: int
    layer_norm: str
    pad_mode: str
    dropout: float
    skip_mode: str
    exp_kernel: int
    gen_final_activ: str
    normalize: bool
    fixedScale: float | None
    learnedScale_init: float | None
    output_scale_lr_mult: float
    gen_sino_size: int = REFERENCE_SIZE
    gen_image_size: int = 180
    gen_sino_channels: int = 1
    gen_image_channels: int = 1

    PREFIX_FIELDS = ("gen_neck", "gen_hidden_dim", "gen_mult", "gen_z_dim", "gen_fill", "layer_norm", "pad_mode",
                     "dropout", "skip_mode", "exp_kernel", "gen_final_activ", "normalize", "fixedScale",
                     "learnedScale_init", "output_scale_lr_mult")

    @classmethod
    def from_flat(cls, config: dict, direction: str) -> "GeneratorConfig":
        if direction not in DIRECTIONS:
            raise ConfigError(f"direction must be one of {list(DIRECTIONS)}, got {direction!r}")
        return cls._from(config, direction, required=True)  # a saved config is always complete

    def __post_init__(self):
        for name in ("gen_neck", "layer_norm", "pad_mode", "skip_mode", "exp_kernel", "gen_final_activ"):
            self._choice(name)
        for name in ("gen_hidden_dim", "gen_z_dim", "gen_sino_size", "gen_image_size", "gen_sino_channels",
                     "gen_image_channels"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise self._bad(name, "must be a positive integer")
        if not _is_int(self.gen_fill) or self.gen_fill < 0:
            raise self._bad("gen_fill", "must be a non-negative integer")
        if not _is_number(self.gen_mult) or self.gen_mult < 1:
            raise self._bad("gen_mult", "must be a number >= 1")
        if not _is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise self._bad("dropout", "must be in [0, 1)")
        if not isinstance(self.normalize, bool):
            raise self._bad("normalize", "must be true or false")
        if self.gen_sino_size % 2 ** N_SCALES:
            raise self._bad("gen_sino_size", f"must be divisible by {2 ** N_SCALES}")
        if self.gen_image_size > self.gen_sino_size:
            raise self._bad("gen_image_size", f"must not exceed gen_sino_size={self.gen_sino_size}")
        if (self.fixedScale is None) == (self.learnedScale_init is None):
            raise self._bad("fixedScale", f"exactly one of {self.direction}_fixedScale and "
                                          f"{self.direction}_learnedScale_init must be set (the other null); got "
                                          f"learnedScale_init={self.learnedScale_init!r}")
        scale = "fixedScale" if self.fixedScale is not None else "learnedScale_init"
        if not _is_number(getattr(self, scale)) or getattr(self, scale) <= 0:
            raise self._bad(scale, "must be a positive number")
        if not _is_number(self.output_scale_lr_mult) or self.output_scale_lr_mult < 0:
            raise self._bad("output_scale_lr_mult", "must be a non-negative number")

    @property
    def in_channels(self) -> int:
        return self.gen_sino_channels if self.direction == "SI" else self.gen_image_channels

    @property
    def out_channels(self) -> int:
        return self.gen_image_channels if self.direction == "SI" else self.gen_sino_channels


@dataclass(frozen=True)
class TrainConfig(_Flat):
    """The supervised-training keys (``config_RAY_SUP``)."""

    batch_size: int
    gen_lr: float
    gen_b1: float
    gen_b2: float
    loss: str
    lr_schedule: str = "none"

    @classmethod
    def from_flat(cls, config: dict) -> "TrainConfig":
        return cls._from(config, required=False)

    def __post_init__(self):
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise self._bad("batch_size", "must be a positive integer")
        if not _is_number(self.gen_lr) or self.gen_lr <= 0:
            raise self._bad("gen_lr", "must be a positive number")
        for name in ("gen_b1", "gen_b2"):
            if not _is_number(getattr(self, name)) or not 0 <= getattr(self, name) < 1:
                raise self._bad(name, "must be in [0, 1)")
        self._choice("loss")
        self._choice("lr_schedule")


@dataclass(frozen=True)
class InjectionConfig(_Flat):
    """The student's feature-injection keys (``config_RAY_DUAL``), with the ablation controls.

    ``inject_routing`` ``crosswise`` (docs/DESIGN.md §6): teacher enc{L} → student dec{L}
    (``inject_enc_to_dec``) and teacher dec{L} → student enc{L} (``inject_dec_to_enc``) for each L in
    ``inject_levels``.  ``coflow``: teacher enc{L} → student enc{L}, teacher dec{L} → student dec{L};
    the two toggles keep naming the *teacher's* side (``inject_enc_to_dec`` switches the teacher's
    encoder features, ``inject_dec_to_enc`` its decoder features), so one ablation grid serves both.
    """

    inject_levels: tuple[int, ...] = LEVELS
    inject_enc_to_dec: bool = True
    inject_dec_to_enc: bool = True
    feature_scale_init: float = 0.1
    feature_scale_lr_mult: float = 1.0
    feature_scale_trainable: bool = True  # control: False with init 0 = same channels, no signal
    shuffle_features: bool = False  # control: another sample's features
    atten_channel: bool = False  # control: the analytic attenuation sinogram as an extra input channel
    inject_routing: str = "crosswise"

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
        if not _is_number(self.feature_scale_init):
            raise self._bad("feature_scale_init", "must be a number")
        if not _is_number(self.feature_scale_lr_mult) or self.feature_scale_lr_mult < 0:
            raise self._bad("feature_scale_lr_mult", "must be a non-negative number")

    @property
    def plan(self) -> dict[str, str]:
        """student tap → teacher tap."""
        plan = {}
        cross = self.inject_routing == "crosswise"
        for lv in self.inject_levels:
            if self.inject_enc_to_dec:
                plan[f"dec{lv}" if cross else f"enc{lv}"] = f"enc{lv}"
            if self.inject_dec_to_enc:
                plan[f"enc{lv}" if cross else f"dec{lv}"] = f"dec{lv}"
        return plan

    def to_flat(self) -> dict:
        return {**super().to_flat(), "inject_levels": list(self.inject_levels)}


TASKS = ("teacher", "student")
# The sizes FrozenFlow pads and crops to (shared.model.network.build); every model gets them too.
SIZE_KEYS = ("gen_sino_size", "gen_image_size", "gen_sino_channels", "gen_image_channels")


def frozenflow_keys(task: str) -> set[str]:
    """The keys FrozenFlow itself consumes (sizes, training, injection); a user's class owns the rest."""
    keys = set(SIZE_KEYS) | set(TrainConfig.flat_keys())
    return keys | set(InjectionConfig.flat_keys()) if task == "student" else keys


def check_sizes(config: dict) -> None:
    for key in SIZE_KEYS:
        if key not in config:
            raise ConfigError(f"config is missing key {key!r} (FrozenFlow pads and crops to it)")
        if not _is_int(config[key]) or config[key] < 1:
            raise ConfigError(f"config key {key!r}={config[key]!r}: must be a positive integer")
    if config["gen_image_size"] > config["gen_sino_size"]:
        raise ConfigError(f"config key 'gen_image_size'={config['gen_image_size']!r}: must not exceed "
                          f"gen_sino_size={config['gen_sino_size']}")


def task_keys(task: str) -> set[str]:
    """Every key a resolved config of ``task`` may hold with the built-in Generator."""
    if task == "teacher":
        return set(GeneratorConfig.flat_keys("IS")) | set(TrainConfig.flat_keys())
    if task == "student":  # plus the teacher's IS_ keys: the one merged dict of an experiment
        return (set(GeneratorConfig.flat_keys("SI")) | set(TrainConfig.flat_keys()) | set(InjectionConfig.flat_keys())
                | teacher_keys())
    raise ConfigError(f"task must be one of {list(TASKS)}, got {task!r}")


def teacher_keys() -> set[str]:
    """The teacher's own keys (``IS_…``); a student's config carries them with the teacher's values."""
    return {k for k in GeneratorConfig.flat_keys("IS") if k.startswith("IS_")}


def check_override_keys(overrides: dict, task: str, builtin: bool = True) -> None:
    """``--set KEY=…`` keys must be keys of ``task`` or the user's aliases (checked before any file is read);
    with a user's class (``builtin=False``) any key may be theirs, and ``load_config`` checks it exists."""
    unknown = sorted(set(overrides) - task_keys(task) - set(ALIAS_KEYS)) if builtin else []
    teacher = sorted(set(overrides) & teacher_keys()) if task == "student" else []
    if teacher:
        raise ConfigError(f"--set {teacher[0]}: IS_ keys describe the teacher and come from its feature store; "
                          f"train and export another teacher to change them")
    if unknown:
        raise ConfigError(f"--set {unknown[0]}: not a {task} config key")


def check_task_config(config: dict, task: str, builtin: bool = True) -> None:
    """Parse a resolved config of ``task`` completely; unknown keys are refused (nothing is ignored).

    With a user's class (``builtin=False``) only FrozenFlow's own keys are parsed here; the rest go to
    the class's factory, which validates them, and those it never reads are listed once."""
    if not builtin:
        check_sizes(config)
        TrainConfig.from_flat(config)
        if task == "student":
            InjectionConfig.from_flat(config)
        return
    unknown = sorted(k for k in set(config) - task_keys(task) if not (task == "student" and k.startswith("IS_")))
    if unknown:
        raise ConfigError(f"config key {unknown[0]!r} is not a {task} key"
                          + (f" (also: {', '.join(unknown[1:])})" if unknown[1:] else ""))
    GeneratorConfig.from_flat(config, "IS" if task == "teacher" else "SI")
    TrainConfig.from_flat(config)
    if task == "student":
        InjectionConfig.from_flat(config)
        if teacher_keys() <= set(config):  # a built-in teacher's part (a user class's IS_ keys are its own)
            GeneratorConfig.from_flat(config, "IS")


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
