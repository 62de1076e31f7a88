"""Slow, real data: a reward model trained on half of HH-RLHF harmless-base beats chance on the
other half. Needs ../shared/data/hh-rlhf (read in place, never copied)."""

from __future__ import annotations

import pytest

from superhf.rewards.training import EMBEDDED_MINILM, RewardTrainingConfig, train_reward_model
from tests.conftest import SHARED

HH = SHARED / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
HH_MAX_LENGTH = 512  # MiniLM's position limit; longer pairs are skipped and counted


@pytest.mark.slow
@pytest.mark.skipif(not HH.is_file(), reason=f"needs the shared HH-RLHF data at {HH}")
def test_minilm_reward_model_beats_chance_on_held_out_half(tmp_path):
    config = RewardTrainingConfig(
        model_name_or_path=EMBEDDED_MINILM,
        dataset_name=str(HH),
        split="first-half",
        max_length=HH_MAX_LENGTH,
        output_dir=str(tmp_path / "rm"),
    )
    final = train_reward_model(config)
    assert final["num_eval_pairs"] > 1000
    assert final["eval_accuracy"] >= 0.55, final
