"""The researcher's dictionary as their own code reads it (docs/DESIGN.md §7, README "Your dictionary").

A dict is stored exactly as the user wrote it (``config.json``, ``best.pt``, ``student.pt``): their key
names (``batch_base2_exponent``, ``sup_base_criterion``, ``gen_sino_channels_SI``), their values
(``"true"``, ``"LeakyReLU"``, both scale keys). This module knows what those keys mean:

* which keys apply to a FrozenFlow run and which do not (``classify``): GAN placeholders
  (``SI_disc_* = 1``), a disabled statistics loss (``SI_stats_criterion = -1`` and its companions),
  the bookkeeping keys (``frozen_variant``, ``recon_variant``) are theirs and harmless — listed once as
  not used; a value asking for something FrozenFlow does not do (an enabled stats loss, a discriminator
  setting other than the placeholder, a ``network_type`` of another task, ``train_SI`` of the other
  direction) is refused naming the key;
* ``as_bool``: their booleans, ``true``/``false`` or the strings ``"true"``/``"false"``;
* ``to_stored``: FrozenFlow's older key names (``batch_size``, ``loss``) in old checkpoints and
  configs → theirs, so every dict on disk speaks one vocabulary.
"""
from __future__ import annotations

import math

from .schema import DIRECTIONS, ConfigError, _direction

BOOL_STRINGS = {"true": True, "false": False}
# ``network_type`` per FrozenFlow task: the activity networks (supervised, frozen-flow) train as the
# student; an attenuation network is the teacher. Their GAN / cycle-consistent types are other tasks.
NETWORK_TYPES = {"student": ("ACT", "SUP", "FROZEN", "FROZEN_COFLOW", "FROZEN_COUNTERFLOW"),
                 "teacher": ("ATTEN", "ATT", "FROZEN"),
                 "activity teacher": ("ACT", "SUP", "FROZEN")}  # a frozen activity backbone: their ACT dicts
GAN_PLACEHOLDER = 1  # their supervised dicts carry every discriminator key at 1
STATS_OFF = (-1, None, "none", "None")  # a disabled statistics (moment) loss
STATS_KEYS = ("stats_criterion", "alpha_min", "half_life_examples", "moment_1_fraction")
BOOKKEEPING = {"frozen_variant": "which frozen-flow variant the dict was tuned for",
               "recon_variant": "which reconstruction input the dict was tuned for"}
LOSS_FROM_LEGACY = {"mse": "MSELoss", "l1": "L1Loss", "smooth_l1": "SmoothL1Loss", "var_weighted_mse": "VarWeightedMSE"}
FROZEN = "FROZEN_"  # the frozen network's whole dict, carried in the student's


def as_bool(value, key: str) -> bool:
    """``true``/``false`` or their two strings (any case); anything else is refused naming the key."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in BOOL_STRINGS:
        return BOOL_STRINGS[value.strip().lower()]
    raise ConfigError(f"config key {key!r}={value!r}: must be true or false (or the strings 'true'/'false')")


def is_bool(value) -> bool:
    return isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in BOOL_STRINGS)


def to_stored(config: dict) -> dict:
    """FrozenFlow's older names → the researcher's (a new dict): ``batch_size`` 2^k → ``batch_base2_exponent``
    k, ``loss`` → ``sup_base_criterion``. Two keys that disagree are refused; everything else is kept as is."""
    c = dict(config)
    if "batch_size" in c:
        b = c.pop("batch_size")
        if not (isinstance(b, int) and not isinstance(b, bool) and b >= 1 and b & (b - 1) == 0):
            raise ConfigError(f"config key 'batch_size'={b!r}: batches are 2**batch_base2_exponent; give "
                              f"batch_base2_exponent (or a power-of-two batch_size)")
        k = b.bit_length() - 1
        if "batch_base2_exponent" in c and c["batch_base2_exponent"] != k:
            raise ConfigError(f"config keys 'batch_size'={b} and 'batch_base2_exponent'="
                              f"{c['batch_base2_exponent']!r} disagree (2**k); give one of them")
        c["batch_base2_exponent"] = k
    if "loss" in c:
        v = c.pop("loss")
        if v not in LOSS_FROM_LEGACY:
            raise ConfigError(f"config key 'loss'={v!r}: FrozenFlow's older name for sup_base_criterion; one of "
                              f"{list(LOSS_FROM_LEGACY)}")
        if "sup_base_criterion" in c and c["sup_base_criterion"] != LOSS_FROM_LEGACY[v]:
            raise ConfigError(f"config keys 'loss'={v!r} and 'sup_base_criterion'={c['sup_base_criterion']!r} "
                              f"disagree; give one of them")
        c["sup_base_criterion"] = LOSS_FROM_LEGACY[v]
    return c


def _stats_off(v) -> bool:
    return v in STATS_OFF or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isclose(v, -1))


def classify(config: dict, task: str, direction: str | None = None, teacher_kind: str = "attenuation") -> dict[str, str]:
    """The keys of ``config`` that are theirs but do not apply to a ``task`` run → why (listed once at start).
    A key whose value asks for something FrozenFlow does not do is refused (ConfigError naming it).
    ``direction``: the network's (default: the task's); ``teacher_kind``: a teacher's (attenuation | activity)."""
    train_si = _direction(task, direction) == "SI"
    role = "activity teacher" if task == "teacher" and teacher_kind == "activity" else task
    unused = {}
    for key, value in config.items():
        if key.startswith(FROZEN):
            continue  # the frozen network's dict: checked against the store's teacher (frozen.merge_frozen)
        if key == "network_type":
            if value not in NETWORK_TYPES[role]:
                other = next((t for t, names in NETWORK_TYPES.items() if value in names), None)
                raise ConfigError(f"config key 'network_type'={value!r}: a dict for "
                                  + (f"the {other} network" if other else "another task (GAN, cycle-consistent, …)")
                                  + f"; a{'n' if role[0] == 'a' else ''} {role} run takes {list(NETWORK_TYPES[role])}")
            unused[key] = f"{value}: the task this dict was made for"
        elif key == "train_SI":
            if as_bool(value, key) != train_si:
                want = "true (sinogram → image)" if train_si else "false (image → sinogram)"
                raise ConfigError(f"config key 'train_SI'={value!r}: this dict trains the other direction; the "
                                  f"{task} is train_SI = {want}")
            unused[key] = "the direction, which the task sets"
        elif key in BOOKKEEPING:
            unused[key] = BOOKKEEPING[key]
        elif any(key.startswith(f"{d}_disc_") for d in DIRECTIONS):
            if value != GAN_PLACEHOLDER:
                raise ConfigError(f"config key {key!r}={value!r}: a GAN discriminator setting; FrozenFlow trains "
                                  f"supervised only (their supervised dicts hold the placeholder {GAN_PLACEHOLDER})")
            unused[key] = "GAN only"
        else:
            prefix, _, name = key.partition("_")
            if prefix in (*DIRECTIONS, "sup") and name in STATS_KEYS:
                criterion = config.get(f"{prefix}_stats_criterion", -1)
                if not _stats_off(criterion):
                    raise ConfigError(f"config key '{prefix}_stats_criterion'={criterion!r}: a statistics (moment) "
                                      f"loss; FrozenFlow trains the supervised loss only (set it to -1 to disable)")
                unused[key] = "stats loss off"
    return unused


def describe_unused(unused: dict[str, str]) -> str:
    """``SI_disc_* (GAN only), SI_stats_criterion=-1 (stats loss off)``: one line, families folded."""
    groups: dict[str, list[str]] = {}
    for key, why in unused.items():
        groups.setdefault(why, []).append(key)
    parts = []
    for why, keys in groups.items():
        disc = [k for k in keys if "_disc_" in k]
        rest = [k for k in keys if k not in disc]
        for d in DIRECTIONS:
            if any(k.startswith(f"{d}_disc_") for k in disc):
                rest.append(f"{d}_disc_*")
        parts.append(f"{', '.join(sorted(rest))} ({why})")
    return "; ".join(parts)
