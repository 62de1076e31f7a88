"""PPO (trl 1.12.0 in .venv-ppo) as a `superhf compare` row, on the tiny random Llama.

The subprocess tests need `make ppo-env`; without it they skip, and the missing environment's
error and the reward module (which runs in superhf's own environment) are still tested.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from superhf.compare.baseline_run import BaselineReward
from superhf.compare.ppo_baseline import _reward_module, ppo_python, run_ppo
from superhf.compare.spec import DONE_FILE, SETTINGS_FILE
from superhf.data import Prompt
from superhf.errors import ConfigError
from superhf.rewards.scoring import RewardScorer
from tests.compare.test_trl_baselines import _read_progress, _run

needs_ppo_env = pytest.mark.skipif(
    not ppo_python().is_file(),
    reason=f"PPO runs in its own environment ({ppo_python()}): create it with `make ppo-env`",
)


def test_missing_environment_names_make_ppo_env(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SUPERHF_PPO_PYTHON", str(tmp_path / "nowhere" / "python"))
    with pytest.raises(ConfigError, match="make ppo-env"):
        run_ppo(_run(tmp_path, tiny_model_dir, "ppo"))


def test_reward_module_scores_each_response_with_its_prompt(tokenizer):
    """Left-padded queries map back to their superhf Prompt; a response is read through its
    stop token (the pads after it are TRL's), cut and decoded as SuperHF cuts its samples."""
    seen = []

    def record(prompts, completions, **kw):
        seen.extend(zip(prompts, completions, kw["source"], strict=True))
        return [float(len(c)) for c in completions]

    prompts = [
        Prompt(prompt=[{"role": "user", "content": q}], text=q, columns={"source": q})
        for q in ("Hi there", "How are you today?")
    ]
    pad, eos = 0, tokenizer.eos_token_id
    ids = [tokenizer(p.text, add_special_tokens=False)["input_ids"] for p in prompts]
    answers = [
        tokenizer(" Fine thanks", add_special_tokens=False)["input_ids"],
        [],
    ]
    reward = BaselineReward(prompts, RewardScorer([record]), tokenizer, [eos], ["\n\nHuman:"])
    module = _reward_module(reward, {tuple(r): i for i, r in enumerate(ids)}, pad)
    width = max(map(len, ids))
    rows = [
        [pad] * (width - len(ids[1])) + ids[1] + answers[0] + [eos, pad],
        [pad] * (width - len(ids[0])) + ids[0] + [eos] + [pad] * (len(answers[0]) + 1),
    ]
    scores = module.score(torch.tensor(rows), width)
    assert seen == [
        (prompts[1].prompt, " Fine thanks", prompts[1].text),
        (prompts[0].prompt, "", prompts[0].text),
    ]
    assert scores.tolist() == [12.0, 0.0]
    assert reward.sampled_tokens == len(answers[0]) + 1 + 1  # through each EOS


@needs_ppo_env
def test_ppo_stops_at_the_budget_and_writes_the_run(tmp_path, tiny_model_dir, monkeypatch):
    from superhf.models import load_policy

    log = tmp_path / "rewards.jsonl"
    monkeypatch.setenv("SUPERHF_TEST_REWARD_LOG", str(log))
    run = _run(
        tmp_path,
        tiny_model_dir,
        "ppo",
        "conversation",
        apply_chat_template=True,
        reward_funcs=["tests.compare.rewards:logging_reward"],
        sampled_token_budget=16,
        extra={"num_ppo_epochs": 1},
    )
    run_ppo(run)
    out = Path(run.output_dir)
    records = _read_progress(out)
    # One update of 4 completions x 4 tokens reaches the budget; TRL would have run on.
    assert [r["sampled_tokens"] for r in records] == [16]
    done = json.loads((out / DONE_FILE).read_text())
    assert done["stop_reason"] == "sampled_token_budget" and done["steps"] == 1
    settings = json.loads((out / SETTINGS_FILE).read_text())
    trl = settings["trl_config"]
    assert (trl["kl_coef"], trl["response_length"], trl["temperature"]) == (0.1, 4, 1.0)
    assert trl["total_episodes"] >= 2 * 4 and trl["num_ppo_epochs"] == 1
    assert trl["per_device_train_batch_size"] * trl["gradient_accumulation_steps"] == 4
    assert settings["pad_token"] != "<|im_end|>" and settings["generation"]["top_p"] == 1.0
    # The reward received the dataset's prompts (conversations), never the rendered text.
    received = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(received) == 4
    assert all(
        r["prompt"][0]["role"] == "user" and "plant" in r["prompt"][0]["content"] for r in received
    )
    model, _, reference, _ = load_policy(str(out))
    assert reference is model


@needs_ppo_env
def test_a_refused_setting_comes_back_as_a_config_error(tmp_path, tiny_model_dir):
    run = _run(tmp_path, tiny_model_dir, "ppo", extra={"kl_coeff": 0.1})
    with pytest.raises(ConfigError, match=r"kl_coeff"):
        run_ppo(run)
    assert not (Path(run.output_dir) / DONE_FILE).exists()
    with pytest.raises(ConfigError, match="run_ppo runs method 'ppo'"):
        run_ppo(replace(run, method="grpo"))
