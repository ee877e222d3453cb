"""After a killed driver and --resume, Ray's result table may hold only a restored trial's first epochs;
the tune summary and trials.csv take the trials' own checkpoints as the truth."""
import csv
import json
import types

import pandas as pd

from shared.files import checkpoint as ckpt_io
from shared.train.tune import collect_results


def _trial(out, trial_id, best_value, best_epoch, epochs, ray_rows):
    folder = out / "trials" / trial_id
    folder.mkdir(parents=True)
    for name, epoch, value in (("best.pt", best_epoch, best_value), ("last.pt", epochs, best_value)):
        ckpt_io.save_atomic({"format_version": ckpt_io.FORMAT_VERSION, "kind": "student", "epoch": epoch,
                             "metrics": {"val_nrmse": value, "epoch": best_epoch}, "config": {}}, folder / name)
    (folder / "config.json").write_text(json.dumps({"gen_lr": 1e-3}))
    df = pd.DataFrame({"training_iteration": [r[0] for r in ray_rows], "val_nrmse": [r[1] for r in ray_rows]})
    return types.SimpleNamespace(metrics={"trial_id": trial_id, "val_nrmse": ray_rows[-1][1],
                                          "training_iteration": ray_rows[-1][0]},
                                 error=None, metrics_dataframe=df, config={})


def test_summary_and_trials_csv_come_from_the_checkpoints(tmp_path):
    # trial a was restored: Ray's table kept epoch 1 (11.06) only, its checkpoints say 2 epochs, best 6.90
    a = _trial(tmp_path, "a", 6.90, 2, 2, [(1, 11.06)])
    b = _trial(tmp_path, "b", 8.00, 2, 2, [(1, 9.0), (2, 8.0)])
    summary = collect_results([a, b], tmp_path, "val_nrmse", "min")
    assert summary["best_trial"] == "a" and summary["val_nrmse"] == 6.90 and summary["best_epoch"] == 2
    assert ckpt_io.load(tmp_path / "best.pt")["metrics"]["val_nrmse"] == 6.90
    rows = {r["trial_id"]: r for r in csv.DictReader(open(tmp_path / "trials.csv"))}
    assert rows["a"]["epochs"] == "2" and float(rows["a"]["best_val_nrmse"]) == 6.90
