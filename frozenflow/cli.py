"""``frozenflow <command> …``: one console command over every entry point (docs/DESIGN.md §10).

Each subcommand is a module's ``main(argv)``; ``frozenflow <command> --help`` shows its flags with
their defaults.  The ``scripts/*.sh`` wrappers call these.
"""
from __future__ import annotations

import importlib
import sys

# command → (module, one line shown by `frozenflow --help`), in pipeline order
COMMANDS = {
    "make-data": ("shared.data.synthetic", "write the built-in synthetic dataset"),
    "check-data": ("shared.data.check", "read every row of a dataset folder and report faults"),
    "inspect-model": ("shared.models.inspect", "every module path of a network with its output shape (for a spec)"),
    "train-teacher": ("phase1_teacher.train", "train (or --tune) the attenuation teacher"),
    "export": ("feature_store.export", "run the frozen teacher once and store its features (Zarr)"),
    "verify": ("feature_store.verify", "check a feature store against its teacher and dataset"),
    "tune-student": ("phase2_student.tune", "Ray Tune over student configs with stored features"),
    "train-student": ("phase2_student.train", "train one student (with or without injection)"),
    "evaluate": ("phase2_student.evaluate", "student vs FBP and MLEM on a split"),
    "ablate": ("phase2_student.ablate", "injection variants and controls over several seeds"),
    "runs": ("shared.evaluation.runs_table", "finished runs side by side: best metrics and the config keys that differ"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()]
    return ("usage: frozenflow <command> [options]   (frozenflow <command> --help for its options)\n\n"
            "commands:\n" + "\n".join(lines))


def main(argv=None) -> int:
    from shared.cli import run_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return run_main(module.main, rest)


if __name__ == "__main__":
    sys.exit(main())
