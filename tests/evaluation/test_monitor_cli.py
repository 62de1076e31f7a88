"""`superhf monitor RUN_DIR`: the reward-hacking monitor replayed over a run's log, no model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from superhf.cli import app
from superhf.evaluation.monitor import SIGNAL_BY_NAME
from superhf.evaluation.monitor_replay import replay_run
from superhf.files import MONITOR_FILE

COLLAPSE = [  # held-out distinct-2 falls to a third of its start at iteration 10
    {"iteration": 0, "eval_reward": 0.1, "eval_distinct_2": 0.9, "num_sampled_tokens_total": 0},
    {"iteration": 5, "eval_reward": 0.2, "eval_distinct_2": 0.85, "num_sampled_tokens_total": 600},
    {"iteration": 10, "eval_reward": 0.3, "eval_distinct_2": 0.3, "num_sampled_tokens_total": 1200},
]


def _run_dir(path: Path, rows: list[dict[str, Any]], name: str = "metrics.jsonl") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _monitor(*args: str) -> Any:
    return CliRunner().invoke(app, ["monitor", *args])


def test_names_the_iteration_and_the_signal(tmp_path):
    run = _run_dir(tmp_path / "run", COLLAPSE)
    result = _monitor(str(run))
    assert result.exit_code == 0, result.output
    assert "eval_distinct_2" in result.stdout and "1,200" in result.stdout
    assert "first warning at iteration 10 (signals eval_distinct_2)" in result.stdout


def test_json_lists_each_warning(tmp_path):
    run = _run_dir(tmp_path / "run", COLLAPSE)
    result = _monitor(str(run), "--json")
    assert result.exit_code == 0, result.output
    (warning,) = json.loads(result.stdout)
    assert warning["run"] == str(run) and warning["iteration"] == 10
    assert warning["sampled_tokens"] == 1200 and warning["signals"] == ["eval_distinct_2"]
    assert warning["warning"].startswith("eval_distinct_2 0.3")


def test_a_monitor_jsonl_folder_replays_too(tmp_path):
    """A TRL run watched by RewardHackingCallback: monitor.jsonl, iteration = optimizer step."""
    run = _run_dir(tmp_path / "grpo", COLLAPSE, MONITOR_FILE)
    result = _monitor(str(run), "--json")
    assert result.exit_code == 0, result.output
    assert [w["iteration"] for w in json.loads(result.stdout)] == [10]
    assert replay_run(run).log.name == MONITOR_FILE


def test_a_quiet_run_says_no_warning_and_a_torn_last_line_is_skipped(tmp_path):
    run = _run_dir(tmp_path / "run", COLLAPSE[:2])
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"iteration": 15, "eval_dis')  # a run being written
    result = _monitor(str(run))
    assert result.exit_code == 0, result.output
    assert "no warning (2 rows, up to iteration 5)" in result.stdout


def test_thresholds_override_a_signal(tmp_path):
    run = _run_dir(tmp_path / "run", COLLAPSE)
    result = _monitor(str(run), "--thresholds", "eval_distinct_2=100")
    assert result.exit_code == 0, result.output
    assert "no warning" in result.stdout and "eval_distinct_2 0.3" not in result.stdout
    # the run's own log said otherwise: the replay says so
    rows = [dict(r, reward_hacking="logged" if r["iteration"] == 10 else None) for r in COLLAPSE]
    run = _run_dir(tmp_path / "logged", rows)
    result = _monitor(str(run), "--thresholds", "eval_distinct_2=100")
    assert "the run logged warnings at iterations [10]" in result.stdout


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("eval_distinct=2", "unknown signal 'eval_distinct'; known signals: eval_meteor"),
        ("eval_kl", "'eval_kl' is not SIGNAL=VALUE"),
        ("eval_kl=high", "eval_kl='high' is not a number"),
    ],
)
def test_a_bad_threshold_is_refused_naming_the_known_signals(tmp_path, item, message):
    run = _run_dir(tmp_path / "run", COLLAPSE)
    result = _monitor(str(run), "--thresholds", item)
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert message in text and "Traceback" not in result.output
    if "unknown" in message:
        assert all(name in text for name in SIGNAL_BY_NAME)


def test_folders_without_a_log_are_refused_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    compare_run = tmp_path / "grpo-s0"
    compare_run.mkdir()
    (compare_run / "progress.jsonl").write_text("{}\n")
    _run_dir(tmp_path / "parent" / "run", COLLAPSE)
    result = _monitor(
        str(tmp_path / "empty"), str(compare_run), str(tmp_path / "nope"), str(tmp_path / "parent")
    )
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "empty' holds no metrics.jsonl (superhf train) nor monitor.jsonl" in text
    assert "grpo-s0' is a `superhf compare` run with no monitor log" in text
    assert "nope': no such folder" in text
    assert "its subfolders run have one" in text
    assert _monitor().exit_code == 2


def test_runs_in_its_own_process_without_loading_torch(tmp_path):
    """The command line as users run it: exit codes, and nothing heavy imported."""
    run = _run_dir(tmp_path / "run", COLLAPSE)
    for args, code in ((["monitor", str(run)], 0), (["monitor", str(tmp_path / "x")], 2)):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "superhf", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == code, result.stderr[-2000:]
        imported = {
            line.rsplit("|", 1)[-1].strip().split(".")[0]
            for line in result.stderr.splitlines()
            if line.startswith("import time:")
        }
        assert imported and not imported & {"torch", "transformers", "datasets", "peft"}
    help_text = subprocess.run(
        [sys.executable, "-m", "superhf", "monitor", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "same rule the trainer applied" in help_text and "--thresholds" in help_text


def test_a_compare_run_without_a_log_is_skipped_beside_monitored_runs(tmp_path):
    """`superhf monitor COMPARE_DIR/runs/*`: best-of-n, SFT and PPO runs have no monitor log."""
    sft = tmp_path / "sft-s0"
    sft.mkdir()
    (sft / "progress.jsonl").write_text("{}\n")
    grpo = _run_dir(tmp_path / "grpo-s0", COLLAPSE, MONITOR_FILE)
    result = _monitor(str(grpo), str(sft), "--json")
    assert result.exit_code == 0, result.output
    assert [w["run"] for w in json.loads(result.stdout)] == [str(grpo)]
    assert "skipped:" in result.stderr and "sft-s0' is a `superhf compare` run" in result.stderr
    alone = _monitor(str(sft))
    assert alone.exit_code == 2 and "no monitor log" in alone.output
