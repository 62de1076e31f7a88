"""The default reward inside a real training iteration: what the risk head reads, what is logged.

One iteration of the real `SuperHFTrainer` with `reward_funcs=["default"]` (the real MiniLM,
profanity-check and SmolLM2 judge; a tiny random policy, for mechanics only) on chat prompts.
For every logged completion, the `harmlessness` in completions.jsonl is recomputed outside the
trainer from the user's question alone: the request-risk head's P(risky) of the question times
the harmlessness head's bounded score of (question, answer). The total is the weighted sum with
the harmlessness weight. So the risk head reads the question, not the chat-rendered prompt, and
the gate reaches the number SuperHF ranks by.
"""

from __future__ import annotations

import json

import pytest

from superhf.config import SuperHFConfig
from superhf.rewards.default import HARMLESSNESS_WEIGHT, DefaultReward
from superhf.train.trainer import SuperHFTrainer
from tests.conftest import make_tiny_llama
from tests.rewards.reply_cases import HARMFUL, HARMLESS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("_one_thread")]


def test_logged_harmlessness_is_request_risk_times_head(tokenizer, tmp_path):
    questions = [HARMLESS[0].request, HARMFUL[0].request, HARMLESS[3].request, HARMFUL[3].request]
    rows = [{"prompt": [{"role": "user", "content": q}]} for q in questions]
    config = SuperHFConfig(
        num_generations=2,
        max_completion_length=12,
        prompts_per_iteration=4,
        max_iterations=1,
        num_eval_prompts=0,
        eval_on_start=False,
        per_device_train_batch_size=4,
        use_peft=False,
        output_dir=str(tmp_path / "run"),
        seed=0,
    )
    SuperHFTrainer(
        model=make_tiny_llama(len(tokenizer)),
        reward_funcs=["default"],
        args=config,
        processing_class=tokenizer,
        train_dataset=rows,
    ).train()
    logged = [
        json.loads(line)
        for line in (tmp_path / "run" / "completions.jsonl").read_text().splitlines()
    ]
    assert len(logged) == 4 * 2

    reward = DefaultReward()
    asked = [row["prompt"][-1]["content"] for row in logged]
    answers = [row["completion"] for row in logged]
    assert set(asked) == set(questions)
    risk = reward.request_risk(asked)
    head = reward._harmlessness_head().bounded(reward.harmlessness_features(asked, answers))
    for row, r, h, answer in zip(logged, risk, head, answers, strict=True):
        expected = r * h if answer.strip() else -1.0
        assert row["rewards/harmlessness"] == pytest.approx(expected, abs=1e-5), row
        parts = [row[f"rewards/{f.__name__}"] for f in reward.reward_funcs()]
        total = sum(w * p for w, p in zip(reward.reward_weights(), parts, strict=True))
        assert row["reward"] == pytest.approx(total, abs=1e-6)
    assert reward.reward_weights()[-1] == HARMLESSNESS_WEIGHT
