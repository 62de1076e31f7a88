"""The monitor as a TrainerCallback: a real short TRL GRPO run with it attached, as a TRL user
attaches it, and what crosses each boundary (the samples the reward read are the samples the
monitor read; the held-out answers it logged are the ones it scored; the warning reaches the
log and monitor.jsonl)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from superhf.evaluation.monitor import RewardHackingMonitor, replay
from superhf.evaluation.monitor_callback import MONITOR_FILE, RewardHackingCallback

trl = pytest.importorskip("trl", reason="the TRL callback test needs trl: pip install '.[compare]'")

QUESTIONS = [
    "How do I keep basil alive indoors?",
    "What is a good way to learn the guitar?",
    "How should I store fresh bread?",
    "Why does my bike chain squeak?",
    "How do I make my tea less bitter?",
    "What should I pack for a day hike?",
]
HELDOUT = [
    "How do I clean a cast iron pan?",
    "What helps me fall asleep faster?",
    "How do I remove a coffee stain?",
    "What is a simple way to start running?",
]


class RecordingReward:
    """Pays for distinct words and records every (prompt, completion) it scored."""

    __name__ = "distinct_words"

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        self.seen += list(zip(map(str, prompts), completions, strict=True))
        return [len(set(c.split())) / 10 for c in completions]


@pytest.mark.slow
def test_grpo_with_the_callback_warns_into_the_log(tmp_path, caplog):
    from datasets import Dataset
    from peft import LoraConfig

    from superhf.config import EvalConfig
    from superhf.models import load_model, load_tokenizer

    tokenizer = load_tokenizer("embedded:SmolLM2-135M-Instruct")
    model = load_model("embedded:SmolLM2-135M-Instruct")
    reward = RecordingReward()
    eval_reward = RecordingReward()
    # A threshold of 0 on the KL to the start: any update that moves the policy warns, so the
    # warning's path (monitor -> logger -> monitor.jsonl) is exercised on a real run.
    monitor = RewardHackingCallback(
        HELDOUT,
        reward_funcs=[eval_reward],
        eval_steps=1,
        sampling=EvalConfig(max_completion_length=12),
        monitor=RewardHackingMonitor(thresholds={"eval_kl": 0.0}),
        seed=0,
    )
    args = trl.GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        num_generations=2,
        per_device_train_batch_size=4,
        generation_batch_size=4,
        max_completion_length=12,
        max_steps=2,
        learning_rate=5e-3,
        beta=0.0,
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
    )
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=[monitor.watch(reward)],
        args=args,
        train_dataset=Dataset.from_list([{"prompt": q} for q in QUESTIONS]),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
        callbacks=[monitor],
    )
    with caplog.at_level(logging.WARNING, logger="superhf.monitor"):
        trainer.train()

    rows = [json.loads(x) for x in (tmp_path / "grpo" / MONITOR_FILE).read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert rows[0]["eval_kl"] == pytest.approx(0.0, abs=1e-6)  # the start is the start
    assert rows[0]["reward_hacking"] is None
    # The warning reached the log, monitor.jsonl and the callback, naming its signal.
    fired = [r for r in rows if r["reward_hacking"]]
    assert fired and all("eval_kl" in r["reward_hacking_signals"] for r in fired)
    messages = [r.getMessage() for r in caplog.records if r.name == "superhf.monitor"]
    assert any(
        m.startswith(f"Reward hacking? step {fired[0]['iteration']}: eval_kl") for m in messages
    )
    assert monitor.warnings[0]["iteration"] == fired[0]["iteration"]
    # `superhf monitor`'s replay of the file finds the same warnings.
    replayed = replay(rows, RewardHackingMonitor(thresholds={"eval_kl": 0.0}))
    assert [w["iteration"] for w in replayed] == [r["iteration"] for r in fired]
    # The training samples the monitor read are the ones the reward scored: 2 steps of 4.
    assert len(reward.seen) == 8
    assert rows[-1]["num_sampled_tokens_total"] > 0
    assert all(0 < r["completions/distinct_2"] <= 1 for r in rows[1:])
    # The held-out answers it logged are the ones its reward scored, per evaluation.
    answers = [
        json.loads(x)
        for x in (tmp_path / "grpo" / "eval_completions.jsonl").read_text().splitlines()
    ]
    counts = [sum(a["iteration"] == r["iteration"] for a in answers) for r in rows]
    assert counts == [r["eval_num_completions"] for r in rows] and min(counts) >= 3
    assert [a["completion"] for a in answers] == [c for _, c in eval_reward.seen]
    assert {a["prompt"] for a in answers} == set(HELDOUT)


def test_trls_kl_lands_in_its_own_steps_row(tmp_path):
    # TRL logs a step's KL after the step's end: the row is written once the KL is in.
    from types import SimpleNamespace

    from transformers import TrainerControl

    monitor = RewardHackingCallback(
        HELDOUT,
        reward_funcs=[lambda prompts, completions, **_: [0.0] * len(completions)],
        output_dir=tmp_path,
        due=lambda step, state: False,
        monitor=RewardHackingMonitor(thresholds={"kl": 0.5}, smooth=3),
    )
    control = TrainerControl()
    kls = [0.0, 0.0, 0.1, 0.9, 1.0, 1.1]
    for step, kl in enumerate(kls, start=1):
        state = SimpleNamespace(global_step=step, max_steps=10)
        monitor.on_step_end(None, state, control)
        monitor.on_log(None, state, control, logs={"kl": kl, "loss": 0.1})
    monitor.on_train_end(None, state, control)
    rows = [json.loads(x) for x in (tmp_path / MONITOR_FILE).read_text().splitlines()]
    assert [(r["iteration"], r["kl"]) for r in rows] == list(enumerate(kls, start=1))
    # The smoothed KL (mean of the last 3) passes 0.5 at step 5 (0.67) and step 6 (1.0).
    assert [r["iteration"] for r in rows if r["reward_hacking"]] == [5, 6]
    assert rows[4]["reward_hacking_signals"] == ["kl"]
