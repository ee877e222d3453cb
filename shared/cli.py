"""Entry-point plumbing: one-line errors (traceback only with --debug), config overrides."""
from __future__ import annotations

import json
import sys


def run_main(main, argv=None) -> int:
    """Call ``main(argv)``; expected failures end with one line on stderr and exit code 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return main(argv) or 0
    except KeyboardInterrupt:
        print("interrupted; rerun the same command (with --resume where offered) to continue", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, KeyError, FloatingPointError) as e:
        if debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 1


def parse_overrides(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs; VALUE is JSON when it parses (numbers, true/false/null, lists), else a string."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
