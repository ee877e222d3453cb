"""FrozenFlow: the ``frozenflow`` command (``frozenflow.cli``); the library lives in the phase packages."""
