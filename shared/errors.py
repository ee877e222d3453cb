"""FrozenFlow's errors: what the user can fix, apart from what is a bug (docs/DESIGN.md §9).

Every refusal of bad input or of a state FrozenFlow will not touch derives from ``FrozenFlowError``;
the command line prints those as one line naming the file, key or flag and exits 2. Anything else that
escapes a command — a ``KeyError`` in training, a ``TypeError`` in a helper — is a bug: the command line
prints its traceback under "this is a bug in FrozenFlow — please report it" and exits 1
(``shared.cli.run_main``). The subclasses say where the problem lies; each is also a ``ValueError``
(or, for a run that cannot go on, a ``RuntimeError``) so callers that catch those keep working.
"""


class FrozenFlowError(Exception):
    """Something the user can fix (bad input, a refused state): one line, exit 2."""


class InputError(FrozenFlowError, ValueError):
    """A flag, value or file the user gave cannot be used."""


class TrainingError(FrozenFlowError, RuntimeError):
    """A run that cannot go on for a reason the message names (a loss that became NaN, no trial reported)."""
