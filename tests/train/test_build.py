"""What a run is built from: the one seeded split of the prompts into training and held-out."""

from __future__ import annotations

import random

import pytest

from superhf.config import ConfigError, SuperHFConfig
from superhf.data import Prompt
from superhf.train.build import split_prompts

PROMPTS = [Prompt(f"Question {i}?", f"Question {i}?") for i in range(20)]


def test_the_held_out_prompts_are_the_end_of_one_seeded_shuffle():
    args = SuperHFConfig(num_eval_prompts=6, prompts_per_iteration=4, seed=3)
    order, held_out, num_iterations = split_prompts(PROMPTS, args, print)
    shuffled = list(range(20))
    random.Random(3).shuffle(shuffled)
    assert order == shuffled[:14]
    assert held_out == [PROMPTS[i] for i in shuffled[14:]]
    assert num_iterations == 3  # 14 training prompts, 4 an iteration
    assert split_prompts(PROMPTS, args, print) == (order, held_out, num_iterations)


def test_max_iterations_caps_the_run_and_says_when_prompts_run_out():
    notes: list[str] = []
    args = SuperHFConfig(num_eval_prompts=0, prompts_per_iteration=4, max_iterations=2)
    assert split_prompts(PROMPTS, args, notes.append)[2] == 2 and not notes
    args = SuperHFConfig(num_eval_prompts=0, prompts_per_iteration=4, max_iterations=9)
    assert split_prompts(PROMPTS, args, notes.append)[2] == 5
    assert "stops after 5 iterations" in notes[0]


@pytest.mark.parametrize(
    ("settings", "fix"),
    [
        ({"num_eval_prompts": 20}, "lower num_eval_prompts"),
        ({"num_eval_prompts": 0, "prompts_per_iteration": 21}, "lower prompts_per_iteration"),
    ],
)
def test_too_few_prompts_name_the_setting_to_lower(settings, fix):
    with pytest.raises(ConfigError, match=fix):
        split_prompts(PROMPTS, SuperHFConfig(**settings), print)
