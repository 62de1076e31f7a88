"""run_log: every sample logged with its scores and a kept flag; resume cuts the logs back."""

from __future__ import annotations

import json

from superhf.data import Prompt
from superhf.evaluation.summary import run_summary
from superhf.files import COMPLETIONS_FILE, EVAL_COMPLETIONS_FILE, METRICS_FILE
from superhf.generation import Completion
from superhf.rewards.scoring import Scores
from superhf.train.run_log import RunLogger, completion_rows

PROMPTS = [Prompt("Why is the sky blue?", "Why is the sky blue?"), Prompt("Hi", "Hi")]
COMPLETIONS = [
    Completion(0, "Rayleigh scattering.", 4, False),
    Completion(0, "Because", 8, True),
    Completion(1, "Hello!", 3, False),
    Completion(1, "Hey there", 3, False),
]
SCORES = Scores([0.9, -0.5, 0.2, 0.4], {"relevance": [1.0, 0.0, 0.5, 0.5], "brevity": [-0.1] * 4})
KEPT = [0, 3]


def test_every_sample_is_logged_with_its_scores_and_kept_flag():
    rows = completion_rows(7, PROMPTS, COMPLETIONS, SCORES, KEPT)
    assert [r["completion"] for r in rows] == [c.text for c in COMPLETIONS]  # sampling order
    assert [r["kept"] for r in rows] == [True, False, False, True]
    assert [r["clipped"] for r in rows] == [False, True, False, False]
    assert rows[1] == {
        "iteration": 7,
        "prompt_index": 0,
        "prompt": "Why is the sky blue?",
        "completion": "Because",
        "reward": -0.5,
        "rewards/relevance": 0.0,
        "rewards/brevity": -0.1,
        "kept": False,
        "clipped": True,
    }


def test_log_all_completions_off_logs_only_the_kept():
    rows = completion_rows(7, PROMPTS, COMPLETIONS, SCORES, KEPT, log_all=False)
    assert [r["completion"] for r in rows] == ["Rayleigh scattering.", "Hey there"]
    assert all(r["kept"] for r in rows)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_resume_cuts_each_log_back_to_the_checkpoint(tmp_path):
    with RunLogger(tmp_path) as logger:
        logger.log_completions([{"iteration": 1}])
        logger.log_completions([{"iteration": 0}], EVAL_COMPLETIONS_FILE)
        at_checkpoint = logger.sizes
        logger.log_completions([{"iteration": 2}, {"iteration": 2}])  # lost with the kill
        logger.log_completions([{"iteration": 2}], EVAL_COMPLETIONS_FILE)
    assert set(at_checkpoint) == {COMPLETIONS_FILE, EVAL_COMPLETIONS_FILE}
    with RunLogger(tmp_path, [{"iteration": 1}], at_checkpoint) as logger:
        logger.log_completions([{"iteration": 2, "again": True}])
    again = [{"iteration": 1}, {"iteration": 2, "again": True}]
    assert _lines(tmp_path / COMPLETIONS_FILE) == again
    assert _lines(tmp_path / EVAL_COMPLETIONS_FILE) == [{"iteration": 0}]
    assert _lines(tmp_path / METRICS_FILE) == [{"iteration": 1}]


def test_a_checkpoint_without_the_eval_size_keeps_that_file(tmp_path):
    """Checkpoints written before eval_completions.jsonl existed record completions only."""
    with RunLogger(tmp_path) as logger:
        logger.log_completions([{"iteration": 1}])
        logger.log_completions([{"iteration": 0}], EVAL_COMPLETIONS_FILE)
    with RunLogger(tmp_path, [], {COMPLETIONS_FILE: 0}):
        pass
    assert (tmp_path / COMPLETIONS_FILE).read_text() == ""
    assert _lines(tmp_path / EVAL_COMPLETIONS_FILE) == [{"iteration": 0}]


def test_a_new_run_replaces_old_logs(tmp_path):
    (tmp_path / COMPLETIONS_FILE).write_text('{"old": 1}\n')
    with RunLogger(tmp_path) as logger:
        logger.log_completions([{"reward": float("nan")}])  # NaN is written as null
    assert _lines(tmp_path / COMPLETIONS_FILE) == [{"reward": None}]


def test_run_summary_reads_logged_metrics_with_nulls():
    history = [
        {"iteration": 0, "eval_reward": -0.5, "eval_meteor": 0.1},
        *({"iteration": i, "reward": 0.1 * i} for i in range(1, 9)),
        {"iteration": 9, "reward": 1.0, "eval_reward": None, "eval_meteor": 0.2},
    ]
    first, held_out = run_summary(history, 16)
    assert first.startswith("Mean reward: first 2 iterations +0.150, last 2 +0.900.")
    assert held_out == (
        "Held-out prompts (the same 16 each time): reward -0.500 at iteration 0, "
        "+nan at iteration 9; METEOR 0.100 -> 0.200."
    )
