"""A trained network from its checkpoint, through the model spec the checkpoint records."""
from __future__ import annotations

from pathlib import Path

from shared.files import checkpoint as ckpt_io
from shared.config.schema import ConfigError

from .network import Network, build
from .spec import ModelSpec


def rebuild(ckpt: dict, path: str | Path, direction: str, **kw) -> Network:
    """The checkpoint's network with its weights: the recorded spec, config and parameter count must agree."""
    record = ckpt.get("meta", {}).get("model")
    try:
        spec = ModelSpec.from_record(record, str(path))
        model = build(spec, ckpt["config"], direction, **kw)
    except (ConfigError, KeyError) as e:
        raise ckpt_io.CheckpointError(f"{path}: its model cannot be rebuilt: {str(e).splitlines()[0]}") from None
    if record.get("parameters") != model.parameter_count():
        changed = " (the factory file changed since)" if spec.factory_sha256() != record.get("factory_sha256") else ""
        raise ckpt_io.CheckpointError(f"{path}: {spec.factory} now builds {model.parameter_count():,} parameters, the "
                                      f"checkpoint holds {record.get('parameters'):,}{changed}")
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError) as e:
        raise ckpt_io.CheckpointError(f"{path}: weights do not fit the {direction} model {spec.factory}: "
                                      f"{str(e).splitlines()[0]}") from None
    return model
