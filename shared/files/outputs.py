"""The one output rule: a command writes only into a new or empty folder, or into a folder FrozenFlow
made for the same kind of output (docs/DESIGN.md §9).

Every output folder gets a small marker first (``.frozenflow-output.json``: the kind, e.g.
``teacher run`` or ``student tune``, and when it was made). Then:

* same kind + ``--resume`` (or a command that continues by nature, such as ablate): continue;
* same kind + ``--overwrite``: replace (only what the command writes);
* same kind, neither: refused, naming both flags;
* another kind, a folder without a marker holding anything, a file: refused even with ``--overwrite``,
  naming what is there. Nothing FrozenFlow did not write is ever replaced or deleted; temp files of a
  killed atomic write (``.NAME.XXXX.partial``) in a folder it continues are removed.

A run or tune folder made by an older FrozenFlow (no marker) is recognised by its checkpoints
(``LEGACY``) and adopted. File outputs (``check-data --json``) follow the same
rule: an existing file is replaced only when it is a report FrozenFlow wrote there.
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path

from shared.files.atomic import PARTIAL, atomic_write_json
from shared.errors import InputError

MARKER = ".frozenflow-output.json"
FILE_MARK = "frozenflow_output"  # key inside a JSON file output naming its kind

# What an unmarked folder of an older FrozenFlow holds, per kind. Only kinds whose files prove who wrote
# them (checkpoints of that phase): a user's own dataset.json or summary.json proves nothing.
LEGACY = {
    "teacher run": ("last.pt", "config.json"),
    "student run": ("last.pt", "config.json"),
    "teacher tune": ("ray", "trials"),
    "student tune": ("ray", "trials"),
}


class OutputError(InputError):
    """An output that would replace something that is not this command's; the message names it."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def kind_of(folder: Path) -> str | None:
    """The kind recorded in ``folder``'s marker, or None."""
    try:
        return json.loads((folder / MARKER).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def _legacy_kind(folder: Path, kind: str, entries: list[str]) -> bool:
    """An unmarked folder of an older FrozenFlow holding ``kind``: its files, and a checkpoint of that phase
    (a run's last.pt, or a tune trial's)."""
    from shared.files.checkpoint import CheckpointError, load

    want = LEGACY.get(kind)
    if not want or not all(name in entries for name in want):
        return False
    checkpoints = ([folder / "last.pt"] if kind.endswith(" run")
                   else sorted((folder / "trials").glob("*/last.pt"))[:1])
    try:
        return all(load(p).get("kind") == kind.split()[0] for p in checkpoints)
    except CheckpointError:
        return False


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _listing(entries: list[str]) -> str:
    return ", ".join(entries[:4]) + (f", … ({len(entries)} entries)" if len(entries) > 4 else "")


def claim(folder: str | Path, kind: str, *, resume: bool = False, overwrite: bool = False,
          flag: str = "--out", continues: bool = False) -> Path:
    """Make ``folder`` this command's ``kind`` output, or refuse; returns the folder (created, marked).

    ``continues``: the command continues an existing output of its kind by nature (no flag needed).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{flag} {folder}: is a file, not a folder; choose another {flag}")
    entries = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    if entries:
        found = kind_of(folder)
        if found is None and _legacy_kind(folder, kind, entries):
            found = kind  # an older FrozenFlow's output of this kind: adopted below
        if found is None:
            raise OutputError(f"{flag} {folder}: holds {_listing(entries)}, which FrozenFlow did not write as {_a(kind)}; "
                              f"choose another {flag} (nothing there is replaced, even with --overwrite)")
        if found != kind:
            raise OutputError(f"{flag} {folder}: holds {_a(found)}, not {_a(kind)}; choose another {flag} "
                              f"({_a(found)} is never replaced by {_a(kind)}, even with --overwrite)")
        if not (resume or overwrite or continues):
            how = "--resume to continue it" if kind.endswith((" run", " tune")) else "--overwrite to replace it"
            raise OutputError(f"{flag} {folder}: already holds {_a(kind)}; pass {how}, or choose another {flag}")
    folder.mkdir(parents=True, exist_ok=True)
    if kind_of(folder) != kind:
        atomic_write_json(folder / MARKER, {"kind": kind, "created": _now()})
    for orphan in folder.glob(f".*{PARTIAL}"):  # temp files of a killed atomic write (shared.files.atomic names them)
        orphan.unlink(missing_ok=True)
    return folder


def claim_file(path: str | Path, kind: str, flag: str) -> Path:
    """A JSON file output: new, or a ``kind`` report FrozenFlow wrote there before (replaced)."""
    path = Path(path)
    if path.exists():
        try:
            mark = json.loads(path.read_text()).get(FILE_MARK) if path.is_file() else None
        except (OSError, ValueError, AttributeError, UnicodeDecodeError):
            mark = None
        if mark != kind:
            raise OutputError(f"{flag} {path}: exists and is not {_a(kind)} FrozenFlow wrote; choose another file "
                              f"(it is never replaced)")
    return path
