"""Metrics a PET researcher can publish: pinned to skimage, masked to the body, with confidence
intervals, and a default selection metric that a blank image cannot win."""
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from phase2_student.evaluate import paired, per_sample_metrics, statistics
from shared.evaluation.metrics import HIGHER_IS_BETTER, masked_metrics, psnr, ssim
from shared.evaluation.tables import paired_lines
from shared.train.loop import FitOptions


def _phantom(seed=0, n=64):
    """A body (disc) with a hot lesion in a zero background, and a noisy reconstruction of it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    body = np.hypot(yy, xx) < n * 0.3
    target = body * 1.0 + (np.hypot(yy - 4, xx + 5) < 4) * 3.0
    noisy = target + rng.normal(0, 0.35, target.shape)  # noise everywhere, background included
    return target, noisy, body


def test_psnr_and_ssim_match_skimage():
    t, p, _ = _phantom()
    r = t.max() - t.min()
    T, P = (torch.from_numpy(a)[None, None] for a in (t, p))
    assert psnr(P, T).item() == pytest.approx(peak_signal_noise_ratio(t, p, data_range=r), rel=1e-9)
    ref = structural_similarity(t, p, data_range=r, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ssim(P, T).item() == pytest.approx(ref, abs=2e-3)  # skimage averages over a cropped full map


def test_masked_metrics_by_hand():
    t, p, body = _phantom()
    m = masked_metrics(torch.from_numpy(p)[None, None], torch.from_numpy(t)[None, None],
                       torch.from_numpy(body)[None, None])
    d = (p - t)[body]
    assert m["masked_mse"].item() == pytest.approx(np.mean(d ** 2))
    assert m["masked_nrmse"].item() == pytest.approx(np.linalg.norm(d) / np.linalg.norm(t[body]))
    r = t[body].max() - t[body].min()
    assert m["masked_psnr"].item() == pytest.approx(10 * np.log10(r ** 2 / np.mean(d ** 2)))
    assert -1 < m["masked_ssim"].item() < 1


def test_a_blank_output_never_wins_the_default_selection():
    t, noisy, body = _phantom()
    blank = np.zeros_like(t)
    whole = {name: per_sample_metrics(x[None, None], t[None, None], body[None, None]) for name, x in
             (("blank", blank), ("noisy", noisy))}
    # the trap: whole-image SSIM prefers the blank image (its background is perfect)
    assert whole["blank"]["ssim"][0] > whole["noisy"]["ssim"][0]
    default = FitOptions().metric
    assert default == "nrmse" and not HIGHER_IS_BETTER[default]
    assert whole["noisy"][default][0] < whole["blank"][default][0] == pytest.approx(1.0)
    assert whole["noisy"]["masked_ssim"][0] > whole["blank"]["masked_ssim"][0]  # inside the body, too


def test_statistics_confidence_interval():
    v = np.array([1.0, 2.0, 3.0, 4.0])
    s = statistics(v)
    half = 3.182446305284263 * np.std(v, ddof=1) / 2  # t(0.975, 3 dof) · s / √n
    assert s["mean"] == 2.5 and s["n"] == 4 and s["ci95"] == pytest.approx([2.5 - half, 2.5 + half])


def test_paired_lines_report_the_paired_numbers_over_samples_and_lesions():
    a, b = np.array([0.30, 0.32, 0.29, 0.35]), np.array([0.36, 0.37, 0.36, 0.38])
    d = paired(a, b)
    summary = {"paired": {"student - plain": {"nrmse": d, "ssim": paired(b, a)}},
               "lesions": {"paired": {"student - mlem": {"crc_hot": paired(b, a)}}}}
    lines = paired_lines(summary)
    assert len(lines) == 2  # NRMSE over samples (SSIM is not a line), hot CRC over lesions
    assert lines[0].startswith("student - plain: NRMSE difference -0.0525 (95 % CI ")
    assert f"{d['ci95'][0]:+.4f} … {d['ci95'][1]:+.4f}" in lines[0] and f"p = {d['p_t']:.2g}" in lines[0]
    assert lines[0].endswith("over samples)")
    assert lines[1].startswith("student - mlem: hot CRC difference +0.0525") and lines[1].endswith("over lesions)")


def _scalars(folder):
    """Read TensorBoard event files (TFRecord framing + tensorboardX's protobuf) into {tag: [(step, value)]}."""
    import struct

    from tensorboardX.proto import event_pb2

    out = {}
    for f in sorted(folder.glob("events.out.tfevents.*")):
        raw = f.read_bytes()
        pos = 0
        while pos < len(raw):
            (n,) = struct.unpack("<Q", raw[pos:pos + 8])
            ev = event_pb2.Event.FromString(raw[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in ev.summary.value:
                out.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return out


def test_a_plain_run_logs_scalars_and_its_provenance(tiny_data, tmp_path):
    import json

    from phase2_student.train import main as student_main
    from shared.cli import run_main
    from tests.conftest import tiny_student_config

    cfg = tmp_path / "s.json"
    cfg.write_text(json.dumps(tiny_student_config()))
    out = tmp_path / "plain"
    assert run_main(student_main, ["--data", str(tiny_data), "--out", str(out), "--inject", "none", "--epochs", "2",
                                   "--config", str(cfg), "--quiet"]) == 0
    sc = _scalars(out / "tensorboard")
    assert [s for s, _ in sc["val_nrmse"]] == [1, 2] and {"train_loss", "val_loss", "lr", "val_ssim"} <= set(sc)
    log = (out / "train.log").read_text()
    assert "[train] epoch 1/2" in log and "[train] epoch 2/2" in log
    assert json.loads((out / "config.json").read_text())["batch_base2_exponent"] == 2  # batch 4, their key
    import re

    assert (out / "command.txt").read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown \(not a git checkout\)", (out / "revision.txt").read_text().strip())


def test_runs_table_shows_best_epochs_and_what_differs(tmp_path, capsys):
    import json

    from shared.evaluation.runs_table import main as runs_main

    for name, lr, curve in (("a", 0.001, [0.6, 0.4, 0.5]), ("b", 0.002, [0.7, 0.65, 0.3])):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"gen_lr": lr, "batch_size": 8}))
        (d / "metrics.csv").write_text("epoch,val_nrmse,val_psnr,val_ssim\n" + "".join(
            f"{e + 1},{v},{20 + e},{0.5}\n" for e, v in enumerate(curve)))
    (tmp_path / "ray" / "x").mkdir(parents=True)  # Ray's own copies are not runs
    assert runs_main([str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "gen_lr" in out[0] and "batch_size" not in out[0]
    assert f"| {tmp_path / 'a'} | 3 | 2 | 0.4000 |" in out[2] and f"| {tmp_path / 'b'} | 3 | 3 | 0.3000 |" in out[3]


def test_tune_loggers_map_to_ray_callbacks(tmp_path, monkeypatch, capsys):
    import builtins

    from ray.tune.logger import CSVLoggerCallback, TBXLoggerCallback

    from shared.train.tune import logger_callbacks, parse_loggers

    assert parse_loggers(None) is None and parse_loggers("tensorboard,csv") == ["tensorboard", "csv"]
    with pytest.raises(ValueError, match="--logger must be a comma list"):
        parse_loggers("wandb")
    cbs = logger_callbacks(["tensorboard", "csv"], tmp_path, "t")
    assert [type(c) for c in cbs] == [TBXLoggerCallback, CSVLoggerCallback]
    assert "writes CSV, JSON and TensorBoard records" in capsys.readouterr().out
    real_import = builtins.__import__

    def no_mlflow(name, *a, **k):
        if name == "mlflow":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with pytest.raises(ValueError, match="needs the mlflow package"):
        logger_callbacks(["mlflow"], tmp_path, "t")
