"""The cost numbers of results.json: per-step costs from progress.jsonl, gains per token."""

from __future__ import annotations

import pytest

from superhf.compare.results import gains_per_token, step_costs


def test_step_costs_are_medians_so_an_evaluation_step_does_not_count():
    progress = [  # step 3 held an in-run evaluation (40 s more)
        {"wall_time_s": 30.0, "sampled_tokens": 100},
        {"wall_time_s": 40.0, "sampled_tokens": 200},
        {"wall_time_s": 90.0, "sampled_tokens": 290},
        {"wall_time_s": 101.0, "sampled_tokens": 400},
    ]
    costs = step_costs(progress)
    assert costs["seconds_per_step"] == 11.0 and costs["tokens_per_step"] == 100
    assert costs["seconds_per_1k_tokens"] == pytest.approx(110.0)
    assert step_costs(progress[:1])["seconds_per_step"] is None


def test_gains_per_token_are_over_the_start_and_none_when_unknown():
    gains = gains_per_token({"reward": 0.5, "test_reward": None}, {"reward": 0.1}, 2000)
    assert gains["reward_gain_per_1k_tokens"] == pytest.approx(0.2)
    assert gains["test_reward_gain_per_1k_tokens"] is None
    assert gains_per_token({"reward": 0.5}, {"reward": 0.1}, 0)["reward_gain_per_1k_tokens"] is None
