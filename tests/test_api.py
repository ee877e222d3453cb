"""The library and command-line surface: typed configs, fit(), the store manifest, atomic writes,
one flag name per idea with defaults in every --help, and the ``frozenflow`` command."""
import argparse
import importlib
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from frozenflow.cli import COMMANDS
from shared.files.atomic import atomic_write, atomic_write_json
from shared.config.construct_dictionaries import load_config
from shared.config.schema import (ConfigError, GeneratorConfig, InjectionConfig, TrainConfig, check_task_config,
                                  task_keys, teacher_keys)
from tests.conftest import tiny_student_config

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ typed config
def test_generator_config_parses_the_flat_keys_once_and_names_bad_ones():
    flat = load_config("teacher")
    cfg = GeneratorConfig.from_flat(flat, "IS")
    assert cfg.gen_neck == flat["IS_gen_neck"] and cfg.gen_sino_size == flat["gen_sino_size"]
    assert cfg.to_flat() == {k: flat[k] for k in GeneratorConfig.flat_keys("IS") if k in flat}  # round trip
    with pytest.raises(ConfigError, match="'IS_gen_neck'='tiny'.*narrow"):
        GeneratorConfig.from_flat({**flat, "IS_gen_neck": "tiny"}, "IS")
    with pytest.raises(ConfigError, match="missing key 'IS_dropout'"):
        GeneratorConfig.from_flat({k: v for k, v in flat.items() if k != "IS_dropout"}, "IS")
    with pytest.raises(ConfigError, match="'gen_sino_size'=100.*divisible by 32"):
        GeneratorConfig.from_flat({**flat, "gen_sino_size": 100}, "IS")
    with pytest.raises(ConfigError, match="'batch_base2_exponent'=-1"):
        TrainConfig.from_flat({**flat, "batch_base2_exponent": -1})


def test_injection_defaults_live_in_one_place_and_unknown_keys_are_refused():
    inj = InjectionConfig.from_flat({})  # every DUAL key has its default in InjectionConfig
    assert inj.feature_scale_init == 0.1 and inj.inject_levels == (144, 36, 9)
    assert inj.plan == {"dec144": "enc144", "enc144": "dec144", "dec36": "enc36", "enc36": "dec36",
                        "dec9": "enc9", "enc9": "dec9"}
    student = load_config("student")
    check_task_config(student, "student")
    with pytest.raises(ConfigError, match="'SI_gen_nek' is not a student key"):
        check_task_config({**student, "SI_gen_nek": "wide"}, "student")
    with pytest.raises(ConfigError, match="'inject_levels' is not a teacher key"):
        check_task_config({**load_config("teacher"), "inject_levels": [9]}, "teacher")
    assert "feature_scale_init" in task_keys("student") and "feature_scale_init" not in task_keys("teacher")


def test_the_tuned_configs_and_search_spaces_use_only_known_keys():
    from shared.config.construct_dictionaries import search_space

    for task in ("teacher", "student"):
        for cpu in (False, True):
            assert set(search_space(task, cpu=cpu)) <= task_keys(task), task
        # tuned JSON: complete, nothing extra (a student's frozen keys come from its teacher's store);
        # the output scale is fixed there, so its lr multiplier and the older channel key are absent
        d = "IS" if task == "teacher" else "SI"
        own = task_keys(task) - {f"{d}_output_scale_lr_mult", "gen_sino_channels", f"gen_sino_channels_{'SI' if d == 'IS' else 'IS'}"}
        assert set(load_config(task)) == own, task


# ------------------------------------------------------------------ library API
@pytest.mark.parametrize("module", ["phase1_teacher", "phase2_student"])
def test_fit_is_a_library_call_without_argparse(module):
    mod = importlib.import_module(module)
    params = inspect.signature(mod.fit).parameters
    assert list(params) == ["config", "data", "out", "options"]
    hints = " ".join(str(p.annotation) for p in params.values())
    assert "argparse" not in hints and "Namespace" not in hints


ROOMS = ["errors", "files", "device", "cli", "config", "physics", "data", "models", "evaluation", "train"]


def _imports(path: Path):
    """(line, imported name) for every import in one file, relative ones resolved."""
    import ast

    mod = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = mod.rsplit(".", 1)[0] if path.name != "__init__.py" else mod.removesuffix(".__init__")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] if node.module else [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        yield from ((node.lineno, n) for n in names)


def test_phase2_student_knows_the_store_only_by_its_public_interface():
    """DESIGN §1: the student imports feature_store's public names (open_store, StoreManifest,
    FeatureStoreDataset, StoreError), never its modules or Zarr."""
    public = {"feature_store", "feature_store.open_store", "feature_store.StoreManifest",
              "feature_store.FeatureStoreDataset", "feature_store.StoreError"}
    seen = []
    for path in (ROOT / "phase2_student").glob("*.py"):
        for line, name in _imports(path):
            if name.split(".")[0] in ("zarr", "zarrs", "tensorstore", "numcodecs") or (
                    name.startswith("feature_store") and name not in public):
                seen.append(f"{path.name}:{line} imports {name}")
    assert seen == []


def test_shared_rooms_import_only_the_rooms_above_them():
    """docs/DESIGN.md §1: ground floor → files → config → physics → data → models → evaluation → train."""
    climbing = []
    for path in (ROOT / "shared").rglob("*.py"):
        here = path.relative_to(ROOT / "shared").parts[0].removesuffix(".py")
        for line, name in _imports(path):
            parts = name.split(".")
            if parts[0] != "shared" or len(parts) < 2 or here not in ROOMS or parts[1] not in ROOMS:
                if parts[0] in ("phase1_teacher", "phase2_student", "feature_store", "frozenflow"):
                    climbing.append(f"shared/{path.relative_to(ROOT / 'shared')}:{line} imports {name}")
                continue
            if ROOMS.index(parts[1]) > ROOMS.index(here):
                climbing.append(f"shared/{path.relative_to(ROOT / 'shared')}:{line} ({here}) imports {name}")
    assert climbing == []


def test_nothing_outside_physics_reaches_into_the_projector():
    """The projector's backends are private to shared/physics/ (its public matrix methods are the way in)."""
    import re

    users = []
    for pkg in ("shared", "phase1_teacher", "feature_store", "phase2_student", "frozenflow", "benchmarks"):
        for path in (ROOT / pkg).rglob("*.py"):
            if "physics" not in path.parts and re.search(r"\._impl\b|_torch_csr|_MatrixBackend", path.read_text()):
                users.append(str(path.relative_to(ROOT)))
    assert users == []


def test_design_lives_in_the_repository():
    assert (ROOT / "docs" / "DESIGN.md").is_file()
    hits = subprocess.run(["git", "grep", "-n", "-e", "DESIGN", "--", "*.py", "*.sh", "*.md", "*.ipynb", "*.toml"],
                          cwd=ROOT, capture_output=True, text=True).stdout.splitlines()
    outside = [h for h in hits if "docs/DESIGN.md" not in h and not h.startswith(("docs/DESIGN.md", "tests/test_api.py"))]
    assert outside == [], outside


def test_store_manifest(tiny_store, tiny_teacher):
    from feature_store import StoreError, open_store
    from phase1_teacher import load_teacher

    m = open_store(tiny_store)
    teacher = load_teacher(tiny_teacher)
    assert set(m.splits) == {"train", "val", "test"} and m.splits["val"].n == 8
    assert all(s.status == "complete" for s in m.splits.values())
    assert m.tap_shapes == {t: teacher.tap_shapes[t] for t in m.taps}
    assert m.teacher_sha256 == teacher.sha256 and m.teacher_config == teacher.config
    assert len(m.fingerprint) == 64 and m.fingerprint == open_store(tiny_store).fingerprint
    with pytest.raises(StoreError, match="has no split 'extra'"):
        m.require("extra")
    with pytest.raises(StoreError, match="has 8 samples, the dataset has 9"):
        m.require("val", n=9)
    with pytest.raises(StoreError, match="not a feature store"):
        open_store(tiny_store.parent / "nowhere.zarr")


# ------------------------------------------------------------------ atomic writes
def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "result.json"
    atomic_write_json(path, {"a": 1})

    def crash(f):
        f.write(b"{half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(path, crash)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temp file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # normal permissions, not mkstemp's 0600


def test_write_parts_writes_every_buffer_in_order_even_past_iov_max_and_short_writes(tmp_path, monkeypatch):
    import numpy as np

    from shared.files import atomic

    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 255, int(n), dtype=np.uint8) if k % 2 else bytes(rng.integers(0, 255, int(n), np.uint8))
             for k, n in enumerate(rng.integers(0, 300, 2500))]  # > IOV_MAX (1024) buffers, some empty
    want = b"".join(bytes(p) for p in parts)
    atomic_write(tmp_path / "a.bin", lambda f: (f.write(b"head"), atomic.write_parts(f, parts), f.write(b"tail")))
    assert (tmp_path / "a.bin").read_bytes() == b"head" + want + b"tail"
    real = os.writev
    monkeypatch.setattr(atomic.os, "writev", lambda fd, bufs: real(fd, bufs[:1]) if len(bufs) > 1 else real(fd, bufs))
    atomic_write(tmp_path / "b.bin", lambda f: atomic.write_parts(f, parts))  # the kernel took only the first buffer
    assert (tmp_path / "b.bin").read_bytes() == want
    monkeypatch.setattr(atomic, "_FALLOCATE", None)  # a filesystem without fallocate: the same bytes
    atomic_write(tmp_path / "c.bin", lambda f: atomic.write_parts(f, parts))
    assert (tmp_path / "c.bin").read_bytes() == want


def test_no_other_write_path_for_whole_files():
    """Every whole-file write in the product goes through shared.files.atomic (one implementation)."""
    offenders = []
    for pkg in ("shared", "phase1_teacher", "feature_store", "phase2_student", "frozenflow"):
        for path in (ROOT / pkg).rglob("*.py"):
            text = path.read_text()
            if path.name != "atomic.py" and any(s in text for s in ("os.replace(", "mkstemp(", ".write_text(")):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


# ------------------------------------------------------------------ command lines
def _parsers():
    for name, (module, _) in COMMANDS.items():
        mod = importlib.import_module(module)
        yield name, mod.parser()


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_flag_has_help_and_its_default_is_shown(name):
    parser = dict(_parsers())[name]
    text = parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        assert action.help, f"{name} {action.option_strings[0]} has no help"
        if action.default not in (None, False, argparse.SUPPRESS) and action.default != []:
            assert f"(default:{action.default})".replace(" ", "") in "".join(text.split()), (name, action.option_strings[0])


def test_one_flag_name_per_idea():
    flags = {name: {o for a in p._actions for o in a.option_strings} for name, p in _parsers()}
    for name in ("export", "verify"):
        assert "--ckpt" in flags[name], name  # the teacher checkpoint
    for name in ("verify", "train-student", "tune-student", "evaluate", "ablate"):
        assert "--features" in flags[name], name  # a store that is read
    assert "--ray-workers" in flags["export"] and "--workers" not in flags["export"]
    assert "--variants" not in flags["export"]  # ablate's variants are injection variants; export's flips are --flips
    assert all("--debug" in f for f in flags.values())


def test_frozenflow_console_command(tmp_path):
    exe = Path(sys.executable).parent / "frozenflow"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and all(name in r.stdout for name in COMMANDS)
    r = subprocess.run([str(exe), "verify", "--features", str(tmp_path / "none.zarr")], capture_output=True, text=True)
    assert r.returncode == 2 and "none.zarr" in r.stdout
    r = subprocess.run([str(exe), "nonsense"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown command 'nonsense'" in r.stderr


def test_resume_is_honoured_and_set_keys_are_checked(tiny_data, tiny_store, tmp_path, capsys):
    from phase2_student.train import main as student_main
    from shared.cli import run_main

    cfg = tmp_path / "student.json"
    cfg.write_text(json.dumps(tiny_student_config()))
    base = ["--data", str(tiny_data), "--out", str(tmp_path / "s"), "--config", str(cfg), "--inject", "none",
            "--quiet", "--epochs", "1"]
    assert run_main(student_main, base) == 0
    assert run_main(student_main, base) == 2 and "--resume" in capsys.readouterr().err
    assert run_main(student_main, base + ["--epochs", "2", "--resume"]) == 0
    assert json.loads((tmp_path / "s" / "config.json").read_text())["inject_levels"] == []
    assert run_main(student_main, base + ["--set", "SI_gen_nek=wide"]) == 2
    assert "SI_gen_nek" in capsys.readouterr().err
    assert run_main(student_main, base + ["--tune", "--out", str(tmp_path / "t")]) == 2
    assert "--config does not apply with --tune" in capsys.readouterr().err


def test_check_data_reads_every_row(tiny_data, tmp_path):
    import shutil

    from shared.data.check import main as check_main

    assert check_main(["--data", str(tiny_data), "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["problems"] == [] and report["splits"]["train"]["attenMap"]["shape"][0] == 24
    bad = tmp_path / "bad"
    shutil.copytree(tiny_data, bad)
    mu = np.load(bad / "train-attenMap.npy")
    mu[5, 0, 3, 3] = np.nan  # a row the opening check does not sample
    np.save(bad / "train-attenMap.npy", mu)
    from shared.cli import run_main

    assert run_main(check_main, ["--data", str(bad), "--json", str(tmp_path / "bad.json")]) == 2
    assert not (tmp_path / "bad.json").exists()  # bad input: nothing written
    report = __import__("shared.data.check", fromlist=["check_dataset"]).check_dataset(bad, log=lambda *a: None)
    assert report["problems"] == [f"{bad / 'train-attenMap.npy'}: row 5 contains NaN/Inf"]


def test_the_summary_describes_the_trained_generators_not_the_defaults(tiny_teacher, tmp_path):
    import shutil

    from shared.files import checkpoint as ckpt_io
    from shared.models import load_spec
    from shared.models.network import build
    from shared.evaluation.summary import describe_generators

    (tmp_path / "teacher").mkdir()
    shutil.copy(tiny_teacher, tmp_path / "teacher" / "best.pt")
    (line,) = describe_generators(tmp_path)
    n = build(load_spec("builtin"), ckpt_io.load(tiny_teacher)["config"], "IS").parameter_count()
    default = build(load_spec("builtin"), load_config("teacher"), "IS").parameter_count()
    assert n != default and f"teacher Generator(IS) of teacher/best.pt: {n:,} parameters" in line
