"""Command-line plumbing shared by every entry point (docs/DESIGN.md §10).

One-line errors for what the user can fix (exit 2) and a traceback headed "a bug" for the rest (exit 1),
parsers that show every default, and ``KEY=VALUE`` config overrides (the training flags: shared/train/flags.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback

from shared.errors import FrozenFlowError, InputError


EXIT_INPUT, EXIT_BUG = 2, 1
BUG_HEADER = "this is a bug in FrozenFlow — please report it with the command and this traceback:"


def run_main(main, argv=None) -> int:
    """Call ``main(argv)``. Bad input or a refused state (``FrozenFlowError``) and a file the system refuses
    (``OSError``) end with one line on stderr and exit code 2 (argparse's code for a bad flag); anything
    else is a bug in FrozenFlow: its traceback under a line saying so, exit code 1 (``--debug``: every
    error raises with its traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return main(argv) or 0
    except KeyboardInterrupt:
        print("interrupted; rerun the same command (with --resume where offered) to continue", file=sys.stderr)
        return 130
    except (FrozenFlowError, OSError) as e:
        if debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_INPUT
    except Exception:
        if debug:
            raise
        print(BUG_HEADER, file=sys.stderr)
        traceback.print_exc()
        return EXIT_BUG


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in every flag's help, and the description printed as written."""


def new_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser that shows defaults; ``--debug`` is added here so every command has it."""
    p = argparse.ArgumentParser(prog=prog, description=(doc or "").strip(), formatter_class=_HelpFormatter)
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return p


def parse_overrides(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs; VALUE is JSON when it parses (numbers, true/false/null, lists), else a string."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise InputError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
