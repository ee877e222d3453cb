"""Search spaces as files: the same sampling vocabulary as ``ray.tune``, in JSON or YAML.

    {"gen_lr": {"loguniform": [1e-4, 3e-3]}, "batch_base2_exponent": {"randint": [5, 9]},
     "SI_gen_neck": {"choice": ["medium", "wide"]}, "SI_dropout": true}

A value that is a one-key mapping of ``choice``, ``uniform``, ``loguniform``, ``randint`` or
``lograndint`` is sampled (``randint``'s upper bound is exclusive, as in ray.tune); anything else is
fixed.  ``read_space`` turns a file into ray.tune domains; ``describe`` turns domains back into this
vocabulary (``--print-config``).

Or the researcher's own Python module of ray.tune dicts, as their dictionary builder merges them:
``my_spaces.py:config_RAY_SI,config_RAY_SI_learnScale,config_RAY_SUP`` — the named dicts merged in order,
later ones winning. ``domain_values`` lists what a domain can produce (every choice, both bounds), which
``shared.train.entry`` checks before the first trial.
"""
from __future__ import annotations

import json
from pathlib import Path
from shared.errors import InputError

SAMPLERS = ("choice", "uniform", "loguniform", "randint", "lograndint")


def read_space(path: str | Path) -> dict:
    """The file's keys → fixed values or ray.tune domains; a malformed entry names the file and key."""
    from ray import tune

    text = str(path)
    if ":" in text and text.split(":", 1)[0].endswith(".py"):
        return read_python_space(*text.split(":", 1))
    if text.endswith(".py"):
        raise InputError(f"{path}: name the dicts to merge, e.g. {path}:config_RAY_SI,config_RAY_SUP")
    path = Path(path)
    try:
        text = path.read_text()
        raw = json.loads(text) if path.suffix.lower() == ".json" else _yaml(text)
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise InputError(f"{path}: cannot read search space ({' '.join(str(e).split())})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping of config keys")
    out = {}
    for key, value in raw.items():
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SAMPLERS:
            kind, args = next(iter(value.items()))
            ok = isinstance(args, list) and (len(args) >= 1 if kind == "choice" else len(args) == 2)
            if ok and kind != "choice":
                low, high = args
                numbers = all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in args)
                ok = numbers and low < high and (low > 0 if kind.startswith("log") else True)
            if not ok:
                want = ("a non-empty list" if kind == "choice" else
                        "[low, high] with 0 < low < high" if kind.startswith("log") else "[low, high] with low < high")
                raise InputError(f"{path}: {key}: {kind} expects {want}, got {args!r}")
            out[key] = tune.choice(args) if kind == "choice" else getattr(tune, kind)(*args)
        elif isinstance(value, dict):
            raise InputError(f"{path}: {key}: a sampled value is one of {list(SAMPLERS)}, got {sorted(value)}")
        else:
            out[key] = value
    return out


def read_python_space(path: str, names: str) -> dict:
    """The dicts ``names`` (comma list) of the Python file ``path``, merged in order (later wins)."""
    import importlib.util

    from ray.tune.search.sample import Domain

    file = Path(path)
    if not file.is_file():
        raise InputError(f"{file}: no such search-space module")
    spec = importlib.util.spec_from_file_location(f"_frozenflow_space_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # their module: any error in it is theirs, named with the file
        raise InputError(f"{file}: cannot import the search-space module ({type(e).__name__}: {e})") from None
    merged = {}
    for name in [n.strip() for n in names.split(",") if n.strip()] or [""]:
        value = getattr(module, name, None) if name else None
        if not isinstance(value, dict):
            have = sorted(k for k, v in vars(module).items() if isinstance(v, dict) and not k.startswith("_"))
            raise InputError(f"{file}: {name or '(no name)'!r} is not a dict in the module (dicts there: "
                             f"{', '.join(have) or 'none'})")
        merged.update(value)
    for key, value in merged.items():
        json_safe = isinstance(value, (str, int, float, bool, list, type(None)))
        if not (isinstance(value, Domain) or json_safe):
            raise InputError(f"{file}: {key}: {type(value).__name__} is neither a ray.tune domain nor a plain value "
                             f"(write activations by class name, e.g. 'LeakyReLU')")
    return merged


def domain_values(domain) -> list:
    """What a ray.tune domain can produce, for checking: every choice of a categorical, both ends of a
    range (a randint's upper bound is exclusive); a domain of another kind: a few seeded draws."""
    from ray.tune.search.sample import Categorical, Float, Integer

    if isinstance(domain, Categorical):
        return list(domain.categories)
    if isinstance(domain, Integer):
        return [domain.lower, domain.upper - 1]
    if isinstance(domain, Float):
        return [domain.lower, domain.upper]
    return [domain.sample(random_state=seed) for seed in range(4)]


def _yaml(text: str):
    try:
        import yaml
    except ImportError:
        raise InputError("YAML needs PyYAML (pip install pyyaml); or write the space as .json") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InputError(str(e)) from None


def describe(space: dict) -> dict:
    """ray.tune domains → the file vocabulary (JSON-safe)."""
    from ray.tune.search.sample import Categorical, Float, Integer, LogUniform

    out = {}
    for key, v in space.items():
        if isinstance(v, Categorical):
            out[key] = {"choice": list(v.categories)}
        elif isinstance(v, (Float, Integer)):
            log = isinstance(v.get_sampler(), LogUniform)
            kind = ("log" if log else "") + ("uniform" if isinstance(v, Float) else "randint")
            out[key] = {kind: [v.lower, v.upper]}
        else:
            out[key] = v
    return out
