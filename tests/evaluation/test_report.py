"""`superhf report` on synthetic run folders: plots, report.md, missing and null metrics."""

from __future__ import annotations

import json
import random

import pytest
import yaml
from typer.testing import CliRunner

from superhf.cli import app
from superhf.config import ConfigError
from superhf.evaluation.report import build_report
from superhf.evaluation.report_plots import tradeoff_points
from superhf.evaluation.report_runs import differing_settings, label_runs, load_run, rolling_mean

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(
    folder,
    beta: float,
    iterations: int = 16,
    eval_every: int | None = 2,
    hacking_at: tuple[int, ...] = (),
    seed: int = 0,
    learning_rate: float = 5e-4,
):
    """A plausible run: reward rises faster and METEOR climbs more when beta is small."""
    rng = random.Random(seed)
    push = 0.1 / beta
    folder.mkdir(parents=True)
    config = {
        "model_name_or_path": "embedded:SmolLM2-135M-Instruct",
        "beta": beta,
        "learning_rate": learning_rate,
        "num_generations": 8,
        "output_dir": str(folder),
        "seed": 66,
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    lines = []
    for i in range(1, iterations + 1):
        row = {
            "iteration": i,
            "reward": 0.3 + 0.01 * push * i + rng.gauss(0, 0.1),
            "reward_std": 0.2,
            "reward_kept": 0.6,
            "kl": None if i == 1 else 0.002 * push * i,  # NaN is written as null
            "loss": 2.5,
            "loss/sft": 2.4,
            "loss/kl": 0.1,
            "completions/mean_length": 30.0,
            "step_time": 20.0,
        }
        if eval_every and i % eval_every == 0:
            meteor = 0.12 + 0.004 * push * i
            row |= {
                "eval_reward": 0.35 + 0.01 * push * i,
                "eval_test_reward": None if i == eval_every else 0.1 + 0.004 * i - 0.001 * push * i,
                "eval_meteor": meteor,
                "eval_meteor_ci_low": meteor - 0.01,
                "eval_meteor_ci_high": meteor + 0.01,
                "reward_hacking": "METEOR rose by 0.1" if i in hacking_at else None,
            }
        lines.append(json.dumps(row))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def sweep(tmp_path):
    return [
        write_run(tmp_path / "beta-0.1", 0.1, hacking_at=(12, 14), seed=1),
        write_run(tmp_path / "beta-0.35", 0.35, seed=2),
        write_run(tmp_path / "beta-1", 1.0, seed=3),
    ]


def _assert_png(path):
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_report_end_to_end(tmp_path, sweep):
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", *map(str, sweep), "--output_dir", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("reward.png", "kl.png", "meteor.png", "tradeoff.png"):
        _assert_png(out / name)
    report = (out / "report.md").read_text()
    for run in sweep:
        assert f"`{run.name}`" in report
    for name in ("reward.png", "kl.png", "meteor.png", "tradeoff.png"):
        assert f"]({name})" in report
    # Only beta differs between the runs (output_dir is ignored): it labels them.
    assert "| run | beta | iterations |" in report
    assert "`beta-0.1`, iteration 12: METEOR rose by 0.1" in report
    assert "`beta-0.1`, iteration 14" in report
    assert "skipped" not in report


def test_tradeoff_has_one_point_per_run(sweep):
    runs = [load_run(r) for r in sweep]
    assert differing_settings(runs) == ["beta"]
    label_runs(runs)
    assert [r.label for r in runs] == ["beta=0.1", "beta=0.35", "beta=1"]
    reward_label, meteor_label, points, left_out = tradeoff_points(runs)
    assert len(points) == 3 and not left_out
    assert "test reward" in reward_label and "last held-out eval" in meteor_label
    # the last logged METEOR and its CI; lower beta = more similar answers
    low_beta = points[0]
    assert low_beta.meteor == pytest.approx(0.12 + 0.004 * 1.0 * 16)
    assert low_beta.meteor_ci == pytest.approx((low_beta.meteor - 0.01, low_beta.meteor + 0.01))
    assert points[0].meteor > points[1].meteor > points[2].meteor


def test_missing_metrics_are_skipped_and_said(tmp_path):
    old = write_run(tmp_path / "old", 0.35, eval_every=None)  # before training-time eval
    with (old / "metrics.jsonl").open("a") as f:
        f.write('{"iteration": 17, "rew')  # a torn last line (the run was killed)
    result = CliRunner().invoke(app, ["report", str(old)])
    assert result.exit_code == 0, result.output
    report = (old / "report.md").read_text()  # one run: the report goes into its folder
    _assert_png(old / "reward.png")
    _assert_png(old / "kl.png")
    assert not (old / "meteor.png").exists()
    assert "METEOR similarity (reward hacking): skipped, no run logged `eval_meteor`" in report
    assert "Reward vs. METEOR: skipped" in report
    assert "No run logged the reward-hacking monitor" in report
    assert "line 17 of" in report and "is not valid JSON" in report
    assert "| 16 |" in report  # 16 iterations read, the torn one skipped


def test_run_without_eval_is_left_out_of_tradeoff(tmp_path, sweep):
    old = write_run(tmp_path / "old", 0.5, eval_every=None)
    runs = [load_run(r) for r in [*sweep, old]]
    _, _, points, left_out = tradeoff_points(runs)
    assert len(points) == 3 and left_out == ["old"]
    path = build_report([*map(str, sweep), str(old)], str(tmp_path / "r"))
    assert "left out (no data) old" in path.read_text()


def test_eval_json_is_preferred_and_tabled(tmp_path, sweep):
    run = sweep[1]
    entry = {
        "path": str(run),
        "reward": {"mean": 0.5, "se": 0.02},
        "test_reward": {"mean": 0.25, "se": 0.03},
        "meteor": {"mean": 0.2, "ci_low": 0.18, "ci_high": 0.22, "num_pairs": 500},
        "kl": {"per_sequence": {"mean": 1.5, "se": 0.1}},
        "length": {"mean_tokens": 40.0},
        "distinct_2": 0.8,
    }
    (run / "eval.json").write_text(json.dumps({"settings": {}, "models": {"x": entry}}))
    reward_label, _, points, _ = tradeoff_points([load_run(run)])
    assert "superhf eval" in reward_label
    assert (points[0].reward, points[0].reward_se, points[0].meteor) == (0.25, 0.03, 0.2)
    report = build_report([str(run)]).read_text()
    assert "Held-out evaluation" in report and "+0.250 ± 0.030" in report


def test_bad_run_dirs(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        load_run(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no metrics.jsonl"):
        load_run(tmp_path)
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "metrics.jsonl" in result.output


def test_rolling_mean():
    assert rolling_mean([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]


def test_iteration_zero_evaluation_is_not_counted_as_an_iteration(tmp_path):
    """eval_on_start writes an iteration-0 row (held-out eval only): 4 iterations, not 5."""
    run = write_run(tmp_path / "run", 0.35, iterations=4, eval_every=2)
    start = {"iteration": 0, "eval_reward": 0.1, "eval_meteor": 0.1, "eval_test_reward": 0.0}
    lines = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(json.dumps(start) + "\n" + lines)
    loaded = load_run(run)
    assert [m["iteration"] for m in loaded.metrics] == [0, 1, 2, 3, 4]
    assert loaded.num_iterations == 4
    report = build_report([str(run)]).read_text()
    row = next(line for line in report.splitlines() if line.startswith("| `run`"))
    assert "| 4 |" in row and "| 5 |" not in row
