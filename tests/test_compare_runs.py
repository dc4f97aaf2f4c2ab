"""scripts/compare_runs.py: metrics of several runs paired at the steps they share."""
from __future__ import annotations

import json

from conftest import load_script


def _run_dir(path, rows, tail=""):
    path.mkdir()
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return path


def test_pairs_shared_steps_plots_and_reports(tmp_path, capsys):
    mod = load_script("compare_runs")
    a = _run_dir(tmp_path / "a", [{"step": 10, "train_loss": 3.0}, {"step": 100, "eval_loss": 2.0},
                                  {"step": 200, "eval_loss": 1.5}, {"step": 200, "eval_loss": 1.4}])  # resumed: last wins
    b = _run_dir(tmp_path / "b", [{"step": 100, "eval_loss": 2.5}, {"step": 200, "eval_loss": 1.2},
                                  {"step": 300, "eval_loss": 1.0}], tail='{"step": 400, "eval_lo')  # cut by a kill
    out = tmp_path / "plot.png"
    assert mod.main([str(a), str(b), "--labels", "shared", "grid", "--out", str(out)]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["eval_loss"] == {"shared": {"100": 2.0, "200": 1.4}, "grid": {"100": 2.5, "200": 1.2}}
    assert res["last_shared_step"] == 200
    assert out.is_file() and out.stat().st_size > 1000


def test_missing_run_or_label_count_is_a_clear_error(tmp_path, capsys):
    mod = load_script("compare_runs")
    a = _run_dir(tmp_path / "a", [{"step": 1, "eval_loss": 1.0}])
    assert mod.main([str(a), str(tmp_path / "nope")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    assert mod.main([str(a), "--labels", "x", "y"]) == 2
