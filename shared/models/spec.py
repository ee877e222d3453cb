"""A model spec: which class builds the network and where its features are (docs/DESIGN.md §2).

``builtin`` is FrozenFlow's own Generator (``shared/models/builtin.yaml``); any other spec is a
JSON/YAML file::

    factory: my_generators.py:make        # a file beside the spec, or a module path "pkg.mod:make"
    taps:      {enc144: contract_blocks.0, …, dec144: expand_blocks.3}
    receivers: {enc144: contract_blocks.1.0.0, …}   # the layer that takes the injected channels
    side_init: torch_default               # how injection's side convolutions start (optional)

The factory is called ``factory(config, direction)``, or ``factory(config, gen_SI=direction == "SI")``
when its signature names ``gen_SI`` (a researcher's ``Generator(config, gen_SI=True)`` class as it is).
It receives the whole flat config; the keys it reads are recorded, so those it never reads can be
listed once instead of silently ignored.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path

import torch.nn as nn

from shared.config.schema import LEVELS, ConfigError

BUILTIN = "builtin"
BUILTIN_FACTORY = "shared.models.generator:Generator"
# Where the built-in class lived before shared/ was split into rooms; checkpoints written then record it.
MOVED_FACTORIES = {"shared.generator:Generator": BUILTIN_FACTORY}
SPEC_KEYS = ("factory", "taps", "receivers", "side_init")
# The tap names a store and the routing know: a side and a level (the size at the reference S = 288).
TAP_NAMES = tuple(f"enc{lv}" for lv in LEVELS) + tuple(f"dec{lv}" for lv in reversed(LEVELS))
SIDE_INITS = {
    "torch_default": "the widened layer as torch initialises it (what a class that built the wider layer gets)",
    "kaiming_normal": "He normal for LeakyReLU(0.2) with the widened layer's fan-in (the built-in Generator's rule)",
    "zeros": "zero (ControlNet): the injected student starts as the plain one",
}


class ModelError(ConfigError):
    """A spec, factory or module path that cannot be used; the message names the file, key or path."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    factory: str  # "pkg.mod:attr" or "/abs/path/file.py:attr"
    taps: dict[str, str]  # tap name → module path
    receivers: dict[str, str]  # tap name → module path of the layer taking that tap's injected channels
    side_init: str = "torch_default"
    source: str = BUILTIN  # "builtin" or the spec file it was read from

    def __post_init__(self):
        where = self.source
        if not isinstance(self.factory, str) or ":" not in self.factory:
            raise ModelError(f"{where}: factory must be 'file.py:name' or 'package.module:name', got {self.factory!r}")
        for key in ("taps", "receivers"):
            value = getattr(self, key)
            if not isinstance(value, dict) or any(not isinstance(p, str) or not p for p in value.values()):
                raise ModelError(f"{where}: {key} must map tap names to module paths (strings)")
            unknown = sorted(set(value) - set(TAP_NAMES))
            if unknown:
                raise ModelError(f"{where}: {key}.{unknown[0]} is not a tap name; tap names are {list(TAP_NAMES)} "
                                 f"(a side and the map's size at S = 288)")
        if self.side_init not in SIDE_INITS:
            raise ModelError(f"{where}: side_init must be one of {list(SIDE_INITS)}, got {self.side_init!r}")

    @property
    def builtin(self) -> bool:
        """The built-in Generator, whose keys FrozenFlow's schema validates (a user class validates its own)."""
        return self.factory == BUILTIN_FACTORY

    # ------------------------------------------------------------------ the factory
    def import_factory(self):
        """The callable the spec names (imported once per process)."""
        target, _, attr = self.factory.rpartition(":")
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise ModelError(f"{self.source}: factory file {path} not found")
            module = _import_file(path)
        else:
            try:
                module = importlib.import_module(target)
            except ImportError as e:
                raise ModelError(f"{self.source}: factory module {target!r} cannot be imported ({e}); install it or "
                                 f"name a file: 'path/to/file.py:{attr}'") from None
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise ModelError(f"{self.source}: {target} has no callable {attr!r}")
        return factory

    def build(self, config: dict, direction: str) -> tuple[nn.Module, set[str]]:
        """The network for ``direction`` ("SI" or "IS") and the config keys the factory read."""
        factory = self.import_factory()
        tracked = ReadKeys(config)
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            params = {}
        try:
            if "gen_SI" in params:
                net = factory(tracked, gen_SI=direction == "SI")
            else:
                net = factory(tracked, direction)
        except ConfigError:
            raise
        except KeyError as e:
            raise ModelError(f"config key {e.args[0]!r} is missing: {self.factory} reads it for the {direction} "
                             f"model (add it to --config or --set)") from e
        except Exception as e:  # the model's own validation: one line, the traceback with --debug
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ModelError(f"{self.factory} refused the {direction} config: {type(e).__name__}: {first}") from e
        if not isinstance(net, nn.Module):
            raise ModelError(f"{self.factory} returned {type(net).__name__}, not a torch.nn.Module")
        return net, tracked.read

    # ------------------------------------------------------------------ records
    def record(self) -> dict:
        """What a checkpoint keeps to rebuild the model (plus the factory file's hash, to name a change)."""
        return {"factory": self.factory, "taps": dict(self.taps), "receivers": dict(self.receivers),
                "side_init": self.side_init, "source": self.source, "factory_sha256": self.factory_sha256()}

    @classmethod
    def from_record(cls, record: dict, where: str) -> "ModelSpec":
        if not isinstance(record, dict) or "factory" not in record:
            raise ModelError(f"{where}: records no model spec (written by an older FrozenFlow); retrain it")
        factory = MOVED_FACTORIES.get(record["factory"], record["factory"])
        return cls(factory=factory, taps=dict(record["taps"]), receivers=dict(record["receivers"]),
                   side_init=record.get("side_init", "torch_default"), source=record.get("source", where))

    def factory_sha256(self) -> str | None:
        target = self.factory.rpartition(":")[0]
        try:
            path = Path(target) if target.endswith(".py") else Path(inspect.getfile(importlib.import_module(target)))
        except (ImportError, TypeError):
            return None
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


class ReadKeys(dict):
    """The config as the factory sees it; remembers which keys were read.

    Iterating (``dict(config)``, ``**config``, ``.items()``) counts as reading every key: a copy
    cannot be followed further.
    """

    def __init__(self, config: dict):
        super().__init__(config)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def _all(self):
        self.read |= set(super().keys())

    def __iter__(self):
        self._all()
        return super().__iter__()

    def keys(self):
        self._all()
        return super().keys()

    def items(self):
        self._all()
        return super().items()

    def values(self):
        self._all()
        return super().values()

    def copy(self):
        self._all()
        return dict(self)


def _import_file(path: Path):
    """Import a user's .py file as a module of its own (its folder joins sys.path for its own imports)."""
    path = path.resolve()
    # keyed by path and content: an edited file is imported afresh (and then fails to fit old weights by name)
    name = "frozenflow_model_" + hashlib.sha256(str(path).encode() + path.read_bytes()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.append(folder)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise ModelError(f"{path}: importing the factory file failed: {type(e).__name__}: {e}") from e
    return module


def load_spec(text: str | None) -> ModelSpec:
    """``builtin`` (or None) → the built-in Generator; else a JSON/YAML spec file."""
    if text in (None, "", BUILTIN):
        path = Path(__file__).with_name("builtin.yaml")
        return _read(path, source=BUILTIN)
    path = Path(text)
    if not path.is_file():
        raise ModelError(f"--model {text}: no such spec file (or say 'builtin'); a spec names factory, taps and "
                         f"receivers (README 'Your own Generator')")
    return _read(path, source=str(path.resolve()))


def _read(path: Path, source: str) -> ModelSpec:
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except Exception as e:
        raise ModelError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'} ({e})") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: a model spec is a mapping of {list(SPEC_KEYS)}")
    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        raise ModelError(f"{path}: unknown key {unknown[0]!r}; a model spec has {list(SPEC_KEYS)}")
    if "factory" not in raw:
        raise ModelError(f"{path}: names no factory ('file.py:make' or 'package.module:Class')")
    factory = str(raw["factory"])
    target, sep, attr = factory.rpartition(":")
    if sep and target.endswith(".py") and not Path(target).is_absolute():
        factory = f"{(path.parent / target).resolve()}:{attr}"  # relative to the spec file, not the cwd
    return ModelSpec(factory=factory, taps=dict(raw.get("taps") or {}), receivers=dict(raw.get("receivers") or {}),
                     side_init=raw.get("side_init", "torch_default"), source=source)
