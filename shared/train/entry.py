"""What both phases' train commands do after parsing flags: train one config, or tune (docs/DESIGN.md §10).

A phase hands over its library ``fit(config, data, out, options)`` and its options; this module
resolves the config (tuned JSON or ``--config``, plus overrides), or builds the search space for
``--tune``, and prints the outcome.  Nothing here knows which phase it runs.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Callable

from shared.config.construct_dictionaries import load_config, resolve, search_space
from shared.config.schema import ConfigError, check_override_keys, check_task_config, frozenflow_keys
from shared.models import load_spec
from shared.config.space_files import describe, domain_values, read_space
from shared.train.loop import BEST, FitOptions
from shared.errors import InputError

Fit = Callable[[dict, str, Path, FitOptions], dict]


def run_training(args, task: str, fit: Fit, options: FitOptions, overrides: dict,
                 trial_config: Callable[[dict], dict] | None = None) -> dict:
    """Train ``task`` with the flags in ``args``; returns the best metrics (or the tune summary)."""
    out = Path(args.out).resolve()
    builtin = load_spec(options.model).builtin
    role = network_role(options)
    check_override_keys(overrides, task, builtin, **role)
    if args.search_space and not args.tune:
        raise InputError("--search-space applies only with --tune (a single run trains --config or the tuned JSON)")
    if args.gpus_per_trial is not None and not args.tune:
        raise InputError("--gpus-per-trial applies only with --tune (a single run uses --device)")
    if args.logger and not args.tune:
        raise InputError("--logger applies only with --tune (a single run always writes metrics.csv, train.log "
                         "and TensorBoard scalars)")
    if args.tune:
        return _tune(args, task, fit, options, overrides, out, trial_config or (lambda c: c), builtin, role)
    config = load_config(task, args.config, overrides, builtin=builtin, direction=role.get("direction"))
    check_task_config(config, task, builtin, **role)
    if args.print_config:
        print(json.dumps(config, indent=2))
        return None
    best = fit(config, args.data, out, options)
    print(f"[{task}] best epoch {best['epoch']}: val_ssim={best['val_ssim']:.4f} val_psnr={best['val_psnr']:.2f} dB "
          f"val_nrmse={best['val_nrmse']:.4f} -> {out / BEST}")
    return best


def network_role(options) -> dict:
    """The direction and teacher kind a phase's options ask for (a teacher's ``kind``; the student: SI)."""
    kind = getattr(options, "kind", None)
    return {"direction": kind.direction, "teacher_kind": kind.kind} if kind is not None else {}


def check_space(space: dict, task: str, builtin: bool, where: str, trial_config=lambda c: c, role=None) -> None:
    """One draw of the space checked completely, then every value of every domain in that draw (as the
    trial would train it: ``trial_config``): a value no trial could train is refused naming the key and
    the value, before Ray starts."""
    from ray.tune.search.sample import Domain

    role = role or {}
    base = resolve(space)
    check_task_config(trial_config(base), task, builtin, **role)
    for key, domain in space.items():
        if isinstance(domain, Domain):
            for value in domain_values(domain):
                try:
                    check_task_config(trial_config({**base, key: resolve({key: value})[key]}), task, builtin, **role)
                except ConfigError as e:
                    raise ConfigError(f"{where}: {key} can draw {value!r}, which no trial can train: {e}") from None


def _tune(args, task, fit, options, overrides, out, trial_config, builtin, role):
    from shared.train.tune import tune_from_cli

    from shared.train.tune import parse_loggers

    if args.config:
        raise InputError("--config does not apply with --tune (the trials sample the search space); "
                         "pin keys with --set KEY=VALUE")
    parse_loggers(args.logger)  # a bad name fails before Ray starts
    if args.num_samples < 1:
        raise InputError(f"--num-samples must be ≥ 1, got {args.num_samples}")
    if not args.cpus_per_trial > 0 or not math.isfinite(args.cpus_per_trial):
        raise InputError(f"--cpus-per-trial must be a positive number, got {args.cpus_per_trial}")
    space = search_space(task, cpu=args.space == "cpu", direction=role.get("direction"))
    if not builtin:  # a user's class: FrozenFlow samples its own keys, the user's file the model's
        own = frozenflow_keys(task, role.get("direction"))
        space = {k: v for k, v in space.items() if k in own}
    if args.search_space:  # the user's file replaces the entries it names (their words accepted)
        user = read_space(args.search_space)
        legacy = sorted(set(user) & {"batch_size", "loss"})
        if legacy:
            raise ConfigError(f"{args.search_space}: {legacy[0]}: sample the researcher's key instead "
                              f"({'batch_base2_exponent (batch 2^k)' if legacy[0] == 'batch_size' else 'sup_base_criterion'})")
        check_override_keys(user, task, builtin, **role)
        space.update(user)
    space.update(overrides)  # the keys the user pins are fixed in every trial
    # every value each domain can produce, checked as a trial would check it: a bad value fails here, not in Ray
    check_space(space, task, builtin, where=args.search_space or "the search space", trial_config=trial_config,
                role=role)
    if args.print_config:
        print(json.dumps(describe(space), indent=2))
        return None
    data_dir = str(Path(args.data).resolve())

    def fit_trial(config, trial_dir, report):
        # a trial trains exactly the config it records (config.json in its folder; trials.csv reads it)
        opts = dataclasses.replace(options, resume=True, progress=False, report=report)
        fit(trial_config(config), data_dir, trial_dir, opts)

    return tune_from_cli(args, out, task, space, fit_trial)
