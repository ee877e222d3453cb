"""Ray Tune over the student's SI + scale + SUP + DUAL dictionaries: ``train`` with ``--tune``.

``frozenflow tune-student --inject 144,36,9 --features STORE --data DIR --out DIR --num-samples K``
"""
from shared.cli import run_main

from .train import main as train_main


def parser():
    from .train import parser as train_parser

    p = train_parser()
    p.prog = "frozenflow tune-student"
    return p


def main(argv=None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    return train_main(["--tune", *argv] if "--tune" not in argv else argv)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
