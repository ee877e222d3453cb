"""Merge the search spaces per task and resolve a space to one concrete, JSON-safe dict."""
from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path

from . import search_spaces as sp
from .schema import ALIAS_TARGETS, ConfigError, canonical, frozenflow_keys

TASKS = ("teacher", "student")


def search_space(task: str, learned_scale: bool = True) -> dict:
    """teacher: IS + scale + SUP; student: SI + scale + SUP + DUAL (docs/DESIGN.md §7)."""
    if task == "teacher":
        scale = sp.config_RAY_IS_learnScale if learned_scale else sp.config_RAY_IS_fixedScale
        return {**sp.config_RAY_IS, **scale, **sp.config_RAY_SUP}
    if task == "student":
        scale = sp.config_RAY_SI_learnScale if learned_scale else sp.config_RAY_SI_fixedScale
        return {**sp.config_RAY_SI, **scale, **sp.config_RAY_SUP, **sp.config_RAY_DUAL}
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


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
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return Path(str(resources.files("shared.config") / "tuned" / f"{task}.json"))


def load_config(task: str, path: str | Path | None = None, overrides: dict | None = None,
                builtin: bool = True) -> dict:
    """The tuned JSON for a task (or a user's file), with overrides; keys must exist already.

    With a user's class (``builtin=False``) the user's file is laid over FrozenFlow's own tuned keys
    (sizes, training, injection): the built-in Generator's architecture keys are not theirs.
    File and overrides may use the user's vocabulary (``schema.canonical``); the result is canonical.
    """
    config = _read_json(Path(path) if path and builtin else tuned_path(task))
    if not builtin:
        own = frozenflow_keys(task)
        config = {k: v for k, v in config.items() if k in own}
        if path:
            user = _read_json(Path(path))
            for alias, target in ALIAS_TARGETS.items():  # their batch_base2_exponent replaces the default batch_size
                if alias in user:
                    config.pop(target, None)
            config.update(user)
    path = Path(path) if path else tuned_path(task)
    config = canonical(config)
    for key, value in canonical(overrides or {}).items():
        if key not in config:
            raise ValueError(f"{path}: override for unknown key {key!r}")
        config[key] = value
    return config


def _read_json(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # JSONDecodeError, and UnicodeDecodeError for a non-UTF-8 file
        raise ValueError(f"{path}: cannot read config JSON ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object of config keys")
    return config


def merge_teacher_keys(config: dict, teacher_config: dict, where: str) -> dict:
    """The student's dict plus the teacher's ``IS_`` keys with the teacher's values: one dict per experiment.

    Shared keys (sizes, ``gen_lr``, …) keep the student's values — in the student's dict they mean
    the student's training.  An ``IS_`` key the caller set to another value than the teacher used
    is refused: the teacher is fixed (``where`` names the store or checkpoint it came from).
    """
    merged = dict(config)
    for key in sorted(k for k in teacher_config if k.startswith("IS_")):  # the built-in's or a user class's
        if key in config and config[key] != teacher_config[key]:
            raise ConfigError(f"config key {key!r}={config[key]!r}, but the teacher of {where} was trained with "
                              f"{teacher_config[key]!r}; IS_ keys describe the teacher and come from it")
        merged[key] = teacher_config[key]
    return merged
