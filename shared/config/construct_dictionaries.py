"""Merge the search spaces per task and resolve a space to one concrete, JSON-safe dict.

Reading a config does not import Ray (with it: 1.4 s and 1,669 modules here): only building or drawing a
search space does."""
from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path

from .schema import ConfigError, frozenflow_keys
from .vocabulary import to_stored
from shared.errors import InputError

TASKS = ("teacher", "student")


def search_space(task: str, learned_scale: bool = True, cpu: bool = False, direction: str | None = None) -> dict:
    """teacher: IS (or SI for a sinogram-side teacher) + scale + SUP; student: SI + scale + SUP + DUAL
    (docs/DESIGN.md §7). ``cpu``: the small space of networks a CPU trains in minutes (demo, tests)
    instead of the researcher's ranges."""
    from . import search_spaces as sp  # imports ray.tune
    from .schema import _direction

    d = _direction(task, direction)
    arch = {"IS": (sp.config_RAY_IS, sp.config_RAY_IS_cpu), "SI": (sp.config_RAY_SI, sp.config_RAY_SI_cpu)}
    scale = getattr(sp, f"config_RAY_{d}_{'learnScale' if learned_scale else 'fixedScale'}")
    space = {**arch[d][cpu], **scale, **(sp.config_RAY_SUP_cpu if cpu else sp.config_RAY_SUP)}
    return {**space, **sp.config_RAY_DUAL} if task == "student" else space


def _plain(value):
    """numpy scalars and tuples → plain JSON types."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def resolve(space: dict, seed: int = 0) -> dict:
    """One concrete dict: every ray.tune sampling object drawn with a seeded generator."""
    from ray.tune.search.sample import Domain

    rng = random.Random(seed)
    out = {}
    for key, value in space.items():
        if isinstance(value, Domain):
            value = value.sample(random_state=rng.randrange(2**31))
        out[key] = _plain(value)
    json.dumps(out)  # fail here, not at checkpoint time, if anything is not JSON-serialisable
    return out


def tuned_path(task: str) -> Path:
    if task not in TASKS:
        raise InputError(f"task must be one of {TASKS}, got {task!r}")
    return Path(str(resources.files("shared.config") / "tuned" / f"{task}.json"))


def load_config(task: str, path: str | Path | None = None, overrides: dict | None = None,
                builtin: bool = True, direction: str | None = None) -> dict:
    """The tuned JSON for a task (or a user's file), with overrides; the dict is kept in the user's words.

    With a user's class (``builtin=False``) the user's file is laid over FrozenFlow's own tuned keys
    (sizes, training, injection): the built-in Generator's architecture keys are not theirs.
    FrozenFlow's older key names (``batch_size``, ``loss``) become the researcher's (``vocabulary.to_stored``).
    An override must name a key the config has or one FrozenFlow reads for the task (``inject_levels`` …).
    An SI teacher (``direction="SI"``) starts from the student's tuned network and training keys.
    """
    from .schema import InjectionConfig, _direction

    si_teacher = task == "teacher" and _direction(task, direction) == "SI"
    tuned = tuned_path("student" if si_teacher else task)
    config = to_stored(_read_json(Path(path) if path and builtin else tuned))
    if si_teacher and not (path and builtin):
        config = {k: v for k, v in config.items() if k not in InjectionConfig.flat_keys()}
    if not builtin:
        own = frozenflow_keys(task, direction)
        config = {k: v for k, v in config.items() if k in own}
        if path:
            config.update(to_stored(_read_json(Path(path))))
    path = Path(path) if path else tuned
    for key, value in to_stored(overrides or {}).items():
        if key not in config and key not in frozenflow_keys(task, direction):
            raise InputError(f"{path}: override for unknown key {key!r}")
        config[key] = value
    return config


def _read_json(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # JSONDecodeError, and UnicodeDecodeError for a non-UTF-8 file
        raise InputError(f"{path}: cannot read config JSON ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: expected a JSON object of config keys")
    return config


def _same(a, b) -> bool:
    """Equal as the researcher's code reads them (``"true"`` is ``True``, ``1`` is ``1.0``)."""
    from .vocabulary import as_bool, is_bool

    if a == b:
        return True
    return is_bool(a) and is_bool(b) and as_bool(a, "") == as_bool(b, "")


def merge_frozen(config: dict, teacher_config: dict, where: str) -> dict:
    """The experiment's one dict: the student's keys plus the frozen network's *whole* dict under ``FROZEN_``
    (architecture and training keys; the researcher's convention, which also holds once a frozen network
    runs in the SI direction). A ``FROZEN_`` key the caller gave must agree with the teacher of ``where``
    (the store); so must an unprefixed ``IS_`` key of the original convention, which moves under ``FROZEN_``.
    """
    from .vocabulary import FROZEN, to_stored

    teacher = to_stored(teacher_config)
    merged = dict(config)
    for key in sorted(config):
        name = key[len(FROZEN):] if key.startswith(FROZEN) else key if key.startswith("IS_") else None
        if name is None or (name not in teacher and not key.startswith(FROZEN)):
            continue  # an IS_ key the teacher never had (their GAN placeholders …): classified like any other
        if name not in teacher:
            raise ConfigError(f"config key {key!r}: the frozen network of {where} was trained without {name!r}")
        if not _same(config[key], teacher[name]):
            raise ConfigError(f"config key {key!r}={config[key]!r}, but the teacher of {where} was trained with "
                              f"{teacher[name]!r}; the frozen network's keys come from it")
        if not key.startswith(FROZEN):
            del merged[key]
    merged.update({FROZEN + k: v for k, v in teacher.items()})
    return merged
