"""`max_sampled_tokens`: the run stops after the iteration whose samples reach the budget,
and a resumed run does not sample past it (the equal budget of `superhf compare`)."""

from __future__ import annotations

import json

from superhf.config import SuperHFConfig
from superhf.train.trainer import SuperHFTrainer

ROWS = [{"prompt": f"Question {i}: tell me about topic {i}."} for i in range(64)]


def _length(prompts, completions, **kw):
    return [len(c) / 40 for c in completions]


def _config(tmp_path, tiny_model_dir, **overrides) -> SuperHFConfig:
    values = dict(
        model_name_or_path=str(tiny_model_dir),
        num_generations=4,
        max_completion_length=8,
        prompts_per_iteration=4,
        max_iterations=10,
        max_sampled_tokens=150,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        num_eval_prompts=0,
        save_steps=100,
        output_dir=str(tmp_path / "run"),
        seed=0,
    )
    return SuperHFConfig(**{**values, **overrides})


def test_stops_after_the_iteration_that_reaches_the_budget(tmp_path, tiny_model_dir):
    config = _config(tmp_path, tiny_model_dir)
    trainer = SuperHFTrainer(args=config, reward_funcs=_length, train_dataset=ROWS)
    history = [m for m in trainer.train() if m["iteration"] > 0]
    per_iteration = [m["num_sampled_tokens"] for m in history]
    assert sum(per_iteration) >= 150 > sum(per_iteration[:-1]), per_iteration
    assert len(history) < 10
    assert history[-1]["num_sampled_tokens_total"] == sum(per_iteration)
    assert history[-1]["peak_memory_mb"] > 0
    # the end of the run evaluates, checkpoints and saves as a last iteration does
    assert (tmp_path / "run" / "adapter_config.json").is_file()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(history)

    # resuming a run whose budget is spent samples nothing more
    again = SuperHFTrainer(args=config, reward_funcs=_length, train_dataset=ROWS)
    resumed = again.train(resume_from_checkpoint=True)
    assert [m["iteration"] for m in resumed if m["iteration"] > 0] == [
        m["iteration"] for m in history
    ]
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == len(lines)
    assert json.loads(lines[-1])["num_sampled_tokens_total"] >= 150
