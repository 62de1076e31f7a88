"""Slow: SmolLM2-135M-Instruct before and after a short SuperHF run, through the real commands:
`superhf train` (with evaluation during training), `superhf eval` on both, `superhf report`.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from superhf.config import EMBEDDED_MODEL

ROOT = Path(__file__).resolve().parents[2]


def _superhf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "superhf.cli", *args],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**__import__("os").environ, "COLUMNS": "200"},
    )


@pytest.mark.slow
def test_smollm2_before_and_after_a_short_run(tmp_path):
    run, evaluation = tmp_path / "run", tmp_path / "eval"
    trained = _superhf(
        "train",
        "--max_iterations", "4",
        "--prompts_per_iteration", "2",
        "--num_generations", "4",
        "--max_completion_length", "24",
        "--num_eval_prompts", "4",
        "--eval_steps", "2",
        "--save_steps", "2",
        "--output_dir", str(run),
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evaluated = [m for m in metrics if "eval_meteor" in m]
    assert [m["iteration"] for m in evaluated] == [0, 2, 4]  # 0: before training
    for m in evaluated:
        assert 0 <= m["eval_meteor"] <= 1 and math.isfinite(m["eval_reward"])
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == [
        "checkpoint-2",
        "checkpoint-4",
    ]

    result = _superhf(
        "eval", EMBEDDED_MODEL, str(run),
        "--num_prompts", "6",
        "--max_completion_length", "32",
        "--meteor_pairs", "30",
        "--output_dir", str(evaluation),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((evaluation / "eval.json").read_text())
    (base_name, base), (run_name, tuned) = report["models"].items()
    assert run_name == run.name
    for m in (base, tuned):
        assert m["num_prompts"] == 6 and m["num_completions"] >= 5
        assert math.isfinite(m["reward"]["mean"])
        assert 0 <= m["meteor"]["ci_low"] <= m["meteor"]["mean"] <= m["meteor"]["ci_high"] <= 1
        assert 0 < m["distinct_2"] <= 1
    # The adapter run's KL to its base is measured; the base model has no reference.
    assert base["kl"]["per_sequence"] is None
    assert math.isfinite(tuned["kl"]["per_token"]["mean"])
    assert "adapter disabled" in tuned["kl"]["reference"]

    reported = _superhf("report", str(run), "--output_dir", str(tmp_path / "report"))
    assert reported.returncode == 0, reported.stderr[-3000:]
    text = (tmp_path / "report" / "report.md").read_text()
    assert run.name in text
    for name in ("reward.png", "kl.png", "meteor.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in text
