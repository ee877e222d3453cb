"""Merge the search spaces per task and resolve a space to one concrete, JSON-safe dict."""
from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path

from . import search_spaces as sp

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


def load_config(task: str, path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """The tuned JSON for a task (or a user's file), with overrides; keys must exist already."""
    path = Path(path) if path else tuned_path(task)
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read config JSON ({e})") from None
    for key, value in (overrides or {}).items():
        if key not in config:
            raise ValueError(f"{path}: override for unknown key {key!r}")
        config[key] = value
    return config
