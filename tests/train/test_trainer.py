"""The whole loop on a tiny random-init Llama: it learns, repeats, writes its outputs."""

from __future__ import annotations

import collections
import json
import math
import statistics

import pytest
import torch

from superhf.config import SuperHFConfig
from superhf.generation import generate_completions
from superhf.train.trainer import SuperHFTrainer
from tests.conftest import make_tiny_llama

ROWS = [{"prompt": f"Question {i}: tell me about topic {i}."} for i in range(200)]


def _config(tmp_path, **overrides) -> SuperHFConfig:
    values = dict(
        num_generations=8,
        max_completion_length=8,
        prompts_per_iteration=8,
        max_iterations=8,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        warmup_steps=0,
        lr_scheduler_type="constant",
        top_k=20,
        use_peft=False,
        beta=0.0,
        output_dir=str(tmp_path / "run"),
        seed=0,
        eval_on_start=False,
    )
    return SuperHFConfig(**{**values, **overrides})


def test_reward_for_one_token_rises(tmp_path, tokenizer):
    model = make_tiny_llama(len(tokenizer))
    config = _config(tmp_path)
    # The token the untrained model samples most often; the reward is its share of a completion.
    torch.manual_seed(0)
    samples, _ = generate_completions(model, tokenizer, [r["prompt"] for r in ROWS[:8]], config)
    counts = collections.Counter(
        t for s in samples for t in tokenizer(s.text, add_special_tokens=False)["input_ids"]
    )
    target = counts.most_common(1)[0][0]

    def prefers_token(prompts, completions, **kw):
        ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]
        return [sum(t == target for t in row) / max(len(row), 1) for row in ids]

    trainer = SuperHFTrainer(
        model=model,
        reward_funcs=prefers_token,
        args=config,
        processing_class=tokenizer,
        train_dataset=ROWS,
    )
    rewards = [m["reward"] for m in trainer.train()]
    first, last = sum(rewards[:2]) / 2, sum(rewards[-3:]) / 3
    assert last > first + 0.03, rewards


def _length_reward(prompts, completions, **kw):
    return [float(len(c)) / 40 for c in completions]


def test_same_seed_same_metrics(tmp_path, tiny_model_dir):
    runs = []
    for name in ("a", "b"):
        config = _config(
            tmp_path / name,
            max_iterations=2,
            use_peft=True,
            beta=0.35,
            model_name_or_path=str(tiny_model_dir),
            learning_rate=1e-2,
        )
        history = SuperHFTrainer(
            reward_funcs=_length_reward, args=config, train_dataset=ROWS
        ).train()
        runs.append(
            [
                {
                    k: v
                    for k, v in m.items()
                    if not k.startswith(("time", "step_time", "tokens_per", "peak_memory"))
                }
                for m in history
            ]
        )
    assert runs[0] == runs[1]
    assert runs[0][1]["kl"] > 0  # the adapter moved away from the reference


def test_outputs_are_written_and_loadable(tmp_path, tiny_model_dir):
    config = _config(
        tmp_path,
        max_iterations=2,
        use_peft=True,
        beta=0.35,
        model_name_or_path=str(tiny_model_dir),
        report_to=["tensorboard"],
        eval_on_start=True,
    )
    SuperHFTrainer(reward_funcs=_length_reward, args=config, train_dataset=ROWS).train()
    run = tmp_path / "run"
    start, *metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1, 2]
    assert start["iteration"] == 0 and "eval_reward" in start and "reward" not in start
    for key in (
        "reward",
        "reward_std",
        "reward_max",
        "reward_kept",
        "rewards/_length_reward/mean",
        "kl",
        "loss",
        "loss/sft",
        "loss/kl",
        "completions/mean_length",
        "completions/clipped_ratio",
        "time/generate",
        "time/score",
        "time/fine_tune",
        "tokens_per_second",
        "learning_rate",
        "num_skipped_minibatches",
    ):
        assert key in metrics[0], key
    rows = [json.loads(line) for line in (run / "completions.jsonl").read_text().splitlines()]
    assert len(rows) == sum(m["num_completions"] for m in metrics)  # every sample, kept or not
    assert sum(r["kept"] for r in rows) == 2 * 8
    assert {"prompt", "completion", "reward", "rewards/_length_reward", "kept"} <= set(rows[0])
    for iteration in (1, 2):  # the kept sample of each prompt is its best
        for index in range(8):
            group = [r for r in rows if (r["iteration"], r["prompt_index"]) == (iteration, index)]
            (best,) = [r for r in group if r["kept"]]
            assert best["reward"] == max(r["reward"] for r in group)
    answers = [json.loads(x) for x in (run / "eval_completions.jsonl").read_text().splitlines()]
    assert [a["iteration"] for a in answers] == [0] * 16 + [2] * 16  # the start and the end
    assert [a["prompt_index"] for a in answers[:16]] == list(range(16))
    assert {"prompt", "completion", "reward", "test_reward", "clipped"} <= set(answers[0])
    assert statistics.fmean(a["reward"] for a in answers[16:]) == pytest.approx(
        metrics[1]["eval_reward"]
    )
    assert list(run.rglob("events.out.tfevents*"))
    from peft import AutoPeftModelForCausalLM

    model = AutoPeftModelForCausalLM.from_pretrained(run)
    assert any("lora" in n for n, _ in model.named_parameters())


def test_full_fine_tuning_uses_a_frozen_reference(tmp_path, tiny_model_dir):
    config = _config(tmp_path, max_iterations=2, beta=0.1, model_name_or_path=str(tiny_model_dir))
    trainer = SuperHFTrainer(reward_funcs=_length_reward, args=config, train_dataset=ROWS)
    assert trainer.reference is not None
    history = trainer.train()
    assert history[-1]["kl"] > 0 and history[-1]["loss/kl"] > 0
    assert all(not p.requires_grad for p in trainer.reference.parameters())
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "run").num_parameters() > 0


def test_non_finite_minibatches_are_skipped_not_applied(tmp_path, tiny_model_dir):
    from superhf.generation import Completion

    config = _config(tmp_path, max_iterations=1, model_name_or_path=str(tiny_model_dir))
    trainer = SuperHFTrainer(reward_funcs=_length_reward, args=config, train_dataset=ROWS)
    samples = [Completion(i % 2, f"answer {i}", 3, False) for i in range(8)]
    with torch.no_grad():
        trainer.model.model.norm.weight[0] = float("nan")  # every forward now gives NaN
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    metrics = trainer.fine_tune(samples, trainer.prompts[:2])
    assert metrics["num_skipped_minibatches"] == 2  # 8 samples / minibatch 4
    for name, param in trainer.model.named_parameters():
        assert torch.equal(param.detach().nan_to_num(), before[name].nan_to_num()), name


@pytest.mark.parametrize(
    ("rows", "error", "message"),
    [
        ([{"text": "x"}], "DatasetError", "no `prompt` column"),
        (ROWS[:12], "ConfigError", "lower num_eval_prompts"),
        (ROWS[:20], "ConfigError", "lower prompts_per_iteration"),
    ],
)
def test_bad_prompts_fail_before_the_model_loads(tmp_path, rows, error, message):
    import superhf.config
    import superhf.data

    expected = getattr(superhf.data, error, None) or getattr(superhf.config, error)
    config = _config(tmp_path, model_name_or_path="/no/such/model/anywhere")
    with pytest.raises(expected, match=message):
        SuperHFTrainer(
            reward_funcs=_length_reward,
            args=config,
            train_dataset=rows,
            processing_class=_tok(),
        )


def _tok():
    from superhf.config import EMBEDDED_MODEL
    from superhf.models import load_tokenizer

    return load_tokenizer(EMBEDDED_MODEL)


def test_held_out_evaluation_is_logged_and_never_drives_training(tmp_path, tiny_model_dir):
    def test_reward(prompts, completions, **kw):
        return [-float(len(c)) for c in completions]  # the opposite of the training reward

    runs = {}
    for name, test, eval_steps in (("with", test_reward, 1), ("without", None, 2)):
        config = _config(
            tmp_path / name,
            max_iterations=3,
            eval_steps=eval_steps,
            num_eval_prompts=8,
            model_name_or_path=str(tiny_model_dir),
        )
        trainer = SuperHFTrainer(
            reward_funcs=_length_reward, test_reward_func=test, args=config, train_dataset=ROWS
        )
        runs[name] = trainer.train()
    with_test, without = runs["with"], runs["without"]
    assert ["eval_meteor" in m for m in without] == [False, True, True]  # every 2nd, and the end
    for m in with_test:  # the same held-out completions under two opposite rewards
        assert m["eval_test_reward"] == pytest.approx(-40 * m["eval_reward"])
        assert 0 <= m["eval_meteor_ci_low"] <= m["eval_meteor"] <= m["eval_meteor_ci_high"] <= 1
    assert math.isnan(without[1]["eval_test_reward"])
    # ... and on the kept (trained-on) completions, beside their train reward
    for m in with_test:
        assert m["eval_kept_reward"] == pytest.approx(m["reward_kept"])
        assert m["eval_kept_test_reward"] == pytest.approx(-40 * m["reward_kept"])
    assert "eval_kept_test_reward" not in without[1]
    # Neither the test scorer nor how often evaluation runs changes training.
    for a, b in zip(with_test, without, strict=True):
        assert (a["reward"], a["loss"], a["grad_norm"]) == (b["reward"], b["loss"], b["grad_norm"])
    # The held-out prompts are never trained on.
    run = tmp_path / "with" / "run"
    held_out = {
        json.loads(x)["prompt"] for x in (run / "eval_prompts.jsonl").read_text().splitlines()
    }
    trained = {
        json.loads(x)["prompt"] for x in (run / "completions.jsonl").read_text().splitlines()
    }
    assert len(held_out) == 8 and trained and not held_out & trained


def _record_learning_rates(trainer) -> list[float]:
    """The learning rate of every optimizer step, as fine-tuning applies it."""
    rates: list[float] = []
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        rates.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    return rates


def test_logged_learning_rate_is_the_one_the_iteration_trained_at(tmp_path, tiny_model_dir):
    config = _config(
        tmp_path,
        max_iterations=4,
        prompts_per_iteration=2,
        num_generations=2,
        per_device_train_batch_size=2,
        lr_scheduler_type="cosine",
        warmup_steps=2,
        learning_rate=1e-3,
        model_name_or_path=str(tiny_model_dir),
    )
    trainer = SuperHFTrainer(reward_funcs=_length_reward, args=config, train_dataset=ROWS)
    rates = _record_learning_rates(trainer)
    history = trainer.train()
    assert len(rates) == 4  # one optimizer step per iteration here
    assert [m["learning_rate"] for m in history] == pytest.approx(rates)
    # warm-up: iteration 1 at lr / warmup_steps, the full rate at iteration warmup_steps
    assert rates[0] == pytest.approx(1e-3 / 2) and rates[1] == pytest.approx(1e-3)
    # then the cosine decay, ending where it did: the last iteration at the rate of step N-1
    assert rates[2] == pytest.approx(1e-3) and rates[3] == pytest.approx(1e-3 / 2)


def test_first_iteration_trains_with_warmup(tmp_path, tiny_model_dir):
    config = _config(
        tmp_path,
        max_iterations=1,
        prompts_per_iteration=2,
        num_generations=2,
        lr_scheduler_type="linear",
        warmup_steps=32,
        model_name_or_path=str(tiny_model_dir),
    )
    trainer = SuperHFTrainer(reward_funcs=_length_reward, args=config, train_dataset=ROWS)
    rates = _record_learning_rates(trainer)
    trainable = trainer.training_state.trainable_parameters
    before = {n: p.detach().clone() for n, p in trainable().items()}
    trainer.train()
    assert rates and rates[0] == pytest.approx(config.learning_rate / 32)
    moved = [not torch.equal(p.detach(), before[n]) for n, p in trainable().items()]
    assert any(moved)


def test_beta_zero_full_fine_tuning_still_logs_the_kl(tmp_path, tiny_model_dir):
    config = _config(tmp_path, max_iterations=2, beta=0.0, model_name_or_path=str(tiny_model_dir))
    trainer = SuperHFTrainer(reward_funcs=_length_reward, args=config, train_dataset=ROWS)
    assert trainer.reference is not None
    history = trainer.train()
    assert all(math.isfinite(m["kl"]) for m in history)
    assert history[-1]["kl"] > 0 and history[-1]["loss/kl"] == 0  # logged, not optimised


def test_beta_zero_without_the_kl_loads_no_reference(tmp_path, tiny_model_dir):
    config = _config(
        tmp_path,
        max_iterations=1,
        beta=0.0,
        log_kl_without_beta=False,
        model_name_or_path=str(tiny_model_dir),
    )
    trainer = SuperHFTrainer(reward_funcs=_length_reward, args=config, train_dataset=ROWS)
    assert trainer.reference is None
    (metrics,) = trainer.train()
    assert math.isnan(metrics["kl"])


def _startup_text(tmp_path, tiny_model_dir, rows, **overrides) -> str:
    import io

    from rich.console import Console

    out = io.StringIO()
    config = _config(
        tmp_path, max_iterations=1, model_name_or_path=str(tiny_model_dir), **overrides
    )
    SuperHFTrainer(
        reward_funcs=_length_reward,
        args=config,
        train_dataset=rows,
        console=Console(file=out, width=400),
    )
    return out.getvalue()


def test_plain_string_prompts_for_a_chat_model_are_pointed_out(tmp_path, tiny_model_dir):
    text = _startup_text(tmp_path, tiny_model_dir, ROWS)
    assert "chat template" in text and "--apply_chat_template" in text
    assert text.count("apply_chat_template") == 1  # said once


def test_no_chat_template_note_for_conversations_or_when_applied(tmp_path, tiny_model_dir):
    conversations = [{"prompt": [{"role": "user", "content": r["prompt"]}]} for r in ROWS]
    assert "apply_chat_template" not in _startup_text(tmp_path, tiny_model_dir, conversations)
    applied = _startup_text(tmp_path / "b", tiny_model_dir, ROWS, apply_chat_template=True)
    assert "apply_chat_template" not in applied
