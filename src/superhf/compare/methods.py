"""The methods the harness runs itself: SuperHF, best-of-n and SFT; and the dispatch to all six.

    python -m superhf.compare.methods RUN_DIR/run.json     # what the harness runs per run

Each `run_*` takes a `MethodRun` and leaves what `superhf.compare.spec` asks for (a policy,
config.yaml, settings.json, progress.jsonl, done.json last). TRL's GRPO/RLOO and PPO live in
`trl_baselines.py` and `ppo_baseline.py`, imported only when run: without TRL (or the PPO
environment) a run is recorded as skipped with the reason, never a crash of the comparison.
"""

from __future__ import annotations

import copy
import json
import random
import sys
import time
import traceback
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from superhf.compare.spec import DONE_FILE, PROGRESS_FILE, SETTINGS_FILE, MethodRun
from superhf.errors import ConfigError
from superhf.files import (
    CONFIG_FILE,
    METRICS_FILE,
    json_safe,
    read_json_lines,
    read_text,
    write_text_atomic,
)

RUN_FILE = "run.json"
"""The MethodRun of a run folder, as the harness wrote it."""
STATUS_FILE = "status.json"
"""Why a run is not done: {"status": "skipped" | "failed", "reason": ...}."""


class MethodUnavailable(Exception):
    """The method cannot run here (an optional dependency is missing): recorded as skipped."""


# --- files ----------------------------------------------------------------------------------


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically (a temporary file renamed into place)."""
    write_text_atomic(path, json.dumps(json_safe(value), indent=2) + "\n")


def write_progress(folder: Path, records: list[dict[str, Any]]) -> None:
    lines = (json.dumps(json_safe(record)) + "\n" for record in records)
    write_text_atomic(folder / PROGRESS_FILE, "".join(lines))


def write_run_files(run: MethodRun, settings: dict[str, Any]) -> None:
    """config.yaml (the start policy) and settings.json (every setting the method ran with)."""
    folder = Path(run.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():  # SuperHF's trainer writes its own, fuller one
        config_path.write_text(
            yaml.safe_dump({"model_name_or_path": run.model_name_or_path}), encoding="utf-8"
        )
    write_json(folder / SETTINGS_FILE, {"method": run.method, "run": run.to_dict(), **settings})


# --- SuperHF --------------------------------------------------------------------------------


def superhf_config(run: MethodRun) -> Any:
    """The SuperHFConfig of a run: the project's defaults, the shared task, the run's extras."""
    from superhf.config import SuperHFConfig, SweepSettings, TaskSettings

    shared = [*fields(TaskSettings), *fields(SweepSettings)]
    values: dict[str, Any] = {f.name: copy.deepcopy(getattr(run, f.name)) for f in shared}
    values |= {
        "prompts_per_iteration": run.prompts_per_step,
        "max_sampled_tokens": run.sampled_token_budget,
        "max_iterations": None,  # the budget stops the run; the prompts bound it
        "use_peft": True,
        "output_dir": run.output_dir,
        # fp32 as the TRL baselines sample (and as every cached run did), whatever the CPU
        "sampling_dtype": "float32",
    }
    config = SuperHFConfig(**{**values, **run.extra})
    if "gradient_accumulation_steps" not in run.extra:
        config.gradient_accumulation_steps = one_step_per_round(config)
    return config


def one_step_per_round(config: Any) -> int:
    """Minibatches per optimizer step such that an epoch over one iteration's trained rows is
    one step, as TRL's GRPO/RLOO take one per generation round (`compare.update_settings`):
    the rows are the kept samples of each prompt and, with negative_weight, its worst one."""
    per_prompt = config.num_kept_per_prompt + (1 if config.negative_weight > 0 else 0)
    rows = config.prompts_per_iteration * min(per_prompt, config.num_generations)
    return max(1, -(-rows // config.per_device_train_batch_size))


def superhf_progress(folder: Path) -> list[dict[str, Any]]:
    """progress.jsonl records from a SuperHF run's metrics.jsonl.

    wall_time_s sums each iteration's step_time without its in-run evaluation (time/eval):
    the training time, as a TRL step's; model loading and checkpoints are not in it. The
    start's evaluation (iteration 0, `eval_on_start`) is step 0.
    """
    path = folder / METRICS_FILE
    if not path.is_file():
        return []
    lines = read_json_lines(read_text(path, "metrics"), str(path), "metrics", skip_bad=True)
    records, wall = [], 0.0
    for metrics in (line.value for line in lines):
        if metrics.get("iteration", 0) < 1:
            if "eval_test_reward" in metrics or "eval_reward" in metrics:  # eval_on_start
                records.append(
                    {
                        "step": 0,
                        "sampled_tokens": 0,
                        "train_reward": None,
                        "wall_time_s": 0.0,
                        "peak_memory_mb": metrics.get("peak_memory_mb"),
                        "eval_reward": metrics.get("eval_reward"),
                        "eval_test_reward": metrics.get("eval_test_reward"),
                    }
                )
            continue
        wall += (metrics.get("step_time") or 0.0) - (metrics.get("time/eval") or 0.0)
        records.append(
            {
                "step": metrics["iteration"],
                "sampled_tokens": metrics.get("num_sampled_tokens_total"),
                "train_reward": metrics.get("reward"),
                "wall_time_s": wall,
                "peak_memory_mb": metrics.get("peak_memory_mb"),
                "kl": metrics.get("kl"),
                "eval_reward": metrics.get("eval_reward"),
                "eval_test_reward": metrics.get("eval_test_reward"),
                "reward_hacking": metrics.get("reward_hacking") or None,
                "seconds_sampling": metrics.get("time/generate"),
                "seconds_scoring": metrics.get("time/score"),
                "seconds_update": metrics.get("time/fine_tune"),
            }
        )
    return records


def run_superhf(run: MethodRun) -> None:
    from superhf.train.trainer import SuperHFTrainer

    start = time.perf_counter()
    config = superhf_config(run)
    folder = Path(run.output_dir)
    resume = (folder / "checkpoints").is_dir() and any((folder / "checkpoints").iterdir())
    trainer = SuperHFTrainer(args=config)
    write_run_files(run, {"config": config.to_dict()})
    history = trainer.train(resume_from_checkpoint=True if resume else None)
    if trainer.stop_signal is not None:
        raise KeyboardInterrupt(f"stopped by signal {trainer.stop_signal}; it resumes")
    records = superhf_progress(folder)
    write_progress(folder, records)
    trained = [m for m in history if m["iteration"] > 0]
    write_json(
        folder / DONE_FILE,
        {
            "method": run.method,
            "steps": len(trained),
            "optimizer_steps": sum(m.get("num_optimizer_steps", 0) for m in trained),
            "sampled_tokens": trainer.num_sampled_tokens,
            "stopped_by": "sampled_token_budget"
            if trainer.budget_spent()
            else (trainer.stop_reason or "ran out of training prompts"),
            "wall_time_s": time.perf_counter() - start,
            "resumed": resume,
            "reward_hacking": [
                {"iteration": m["iteration"], "warning": m["reward_hacking"]}
                for m in trained
                if m.get("reward_hacking")
            ],
        },
    )


# --- best-of-n ------------------------------------------------------------------------------


def run_best_of_n(run: MethodRun) -> None:
    """Nothing to train: the policy is the start; evaluation samples n and the train reward
    picks one per prompt (its sampled tokens are the evaluation's)."""
    folder = Path(run.output_dir)
    write_run_files(
        run,
        {
            "n": run.num_generations,
            "selection": "the highest train reward of n evaluation samples per prompt",
        },
    )
    write_progress(folder, [])
    write_json(
        folder / DONE_FILE,
        {"method": run.method, "steps": 0, "sampled_tokens": 0, "stopped_by": "no training"},
    )


# --- SFT on the chosen answers ---------------------------------------------------------------


def _sft_plan(
    pairs: list[tuple[list[int], list[int]]], batch_size: int, max_tokens: int
) -> tuple[list[list[tuple[list[int], list[int]]]], str]:
    """Minibatches until `max_tokens` completion tokens are trained, or one epoch."""
    batches, tokens = [], 0
    for i in range(0, len(pairs), batch_size):
        if tokens >= max_tokens:
            return batches, "trained-token budget (budget / num_generations)"
        batch = pairs[i : i + batch_size]
        batches.append(batch)
        tokens += sum(len(c) for _, c in batch)
    return batches, "one epoch over the chosen answers (smaller than the budget)"


def run_sft(run: MethodRun) -> None:
    """LoRA fine-tuning (same settings) on the chosen answers with cross-entropy.

    Budget: as many completion tokens as SuperHF trains on at the same sampled-token budget
    (it keeps 1 of `num_generations` samples: budget / num_generations), or one epoch if
    smaller; which one is written to done.json.
    """
    start = time.perf_counter()
    folder = Path(run.output_dir)
    data = run.extra.get("sft_data")
    if not data or not Path(data).is_file():
        raise MethodUnavailable(
            "no chosen answers to fine-tune on: the training rows hold no `chosen` column; set "
            "sft_dataset_name to preference pairs (HH transcripts or prompt/chosen)."
        )
    import torch

    from superhf.batching import build_training_batch, encode_prompt
    from superhf.models import get_peft_model, load_model, load_tokenizer, lora_config
    from superhf.train.loss import superhf_loss
    from superhf.train.run_log import peak_memory_mb
    from superhf.train.schedule import iteration_scheduler

    batch_size = int(run.extra.get("per_device_train_batch_size", 2))
    max_tokens = int(
        run.extra.get("max_trained_tokens", run.sampled_token_budget // run.num_generations)
    )
    torch.manual_seed(run.seed)
    tokenizer = load_tokenizer(run.model_name_or_path)
    rows = [json.loads(line) for line in Path(data).read_text(encoding="utf-8").splitlines()]
    random.Random(run.seed).shuffle(rows)
    pairs = []
    for row in rows:
        prompt = encode_prompt(tokenizer, row["prompt"])
        if len(prompt) > run.max_prompt_length:
            continue
        answer = tokenizer(row["answer"], add_special_tokens=False)["input_ids"]
        clipped = len(answer) >= run.max_completion_length
        answer = answer[: run.max_completion_length]
        pairs.append((prompt, answer if clipped else [*answer, tokenizer.eos_token_id]))
    batches, stopped_by = _sft_plan(pairs, batch_size, max_tokens)
    model = load_model(run.model_name_or_path)
    policy = get_peft_model(model, lora_config(run))
    policy.train()
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=run.learning_rate, weight_decay=0.01)
    scheduler = iteration_scheduler(
        run.extra.get("lr_scheduler_type", "constant_with_warmup"),
        optimizer,
        int(run.extra.get("warmup_steps", 0)),
        max(len(batches), 1),
    )
    settings = {
        "loss": "token-mean cross-entropy on the chosen answer (and its end token)",
        "per_device_train_batch_size": batch_size,
        "max_trained_tokens": max_tokens,
        "num_pairs": len(pairs),
        "num_steps": len(batches),
        "stopped_by": stopped_by,
        "weight_decay": 0.01,
    }
    write_run_files(run, settings)
    records, trained = [], 0
    for step, batch in enumerate(batches, 1):
        inputs = build_training_batch([p for p, _ in batch], [c for _, c in batch], tokenizer)
        keep = inputs.logits_to_keep()
        logits = policy(**inputs.model_inputs(), logits_to_keep=keep).logits
        loss = superhf_loss(logits, inputs.labels[:, -keep:], None, 0.0).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        trained += sum(len(c) for _, c in batch)
        records.append(
            {
                "step": step,
                "sampled_tokens": 0,
                "train_reward": None,
                "wall_time_s": time.perf_counter() - start,
                "peak_memory_mb": peak_memory_mb(),
                "train_loss": float(loss.detach()),
                "trained_tokens": trained,
            }
        )
    policy.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_progress(folder, records)
    write_json(
        folder / DONE_FILE,
        {
            "method": run.method,
            "steps": len(batches),
            "sampled_tokens": 0,
            "trained_tokens": trained,
            "stopped_by": stopped_by,
            "wall_time_s": time.perf_counter() - start,
        },
    )


# --- dispatch --------------------------------------------------------------------------------


def planned_settings(run: MethodRun) -> dict[str, Any] | None:
    """What the run's settings.json will hold about its update, before it runs (no model is
    loaded): SuperHF's config, or TRL's GRPO/RLOO config. None for the other methods."""
    if run.method == "superhf":
        return {"config": superhf_config(run).to_dict()}
    if run.method in ("grpo", "rloo"):
        from superhf.compare.baseline_run import split_extra
        from superhf.compare.trl_baselines import LR_SCHEDULE, trl_settings

        config = {**trl_settings(run, use_cpu=True), **split_extra(run)[1]}
        return {"trl_config": config, "lora": run.lora_kwargs(), "lr_schedule": LR_SCHEDULE}
    return None


def run_method(run: MethodRun) -> None:
    """Run one method; MethodUnavailable when an optional part is missing."""
    if run.method == "superhf":
        return run_superhf(run)
    if run.method == "best_of_n":
        return run_best_of_n(run)
    if run.method == "sft":
        return run_sft(run)
    if run.method in ("grpo", "rloo"):
        import importlib.util

        if importlib.util.find_spec("trl") is None:
            raise MethodUnavailable("TRL is not installed: pip install 'superhf[compare]'")
        try:
            from superhf.compare.trl_baselines import run_trl_baseline
        except ImportError as err:
            raise MethodUnavailable(f"superhf.compare.trl_baselines: {err}") from err
        try:
            return run_trl_baseline(run)
        except ConfigError as err:  # a missing extra, as the runner reports it
            raise MethodUnavailable(str(err)) from err
    if run.method == "ppo":
        try:
            from superhf.compare.ppo_baseline import run_ppo
        except ImportError as err:
            raise MethodUnavailable(f"superhf.compare.ppo_baseline: {err}") from err
        try:
            return run_ppo(run)
        except ConfigError as err:  # e.g. the PPO environment is missing (make ppo-env)
            raise MethodUnavailable(str(err)) from err
    raise ConfigError(f"unknown method {run.method!r}")


def execute(run: MethodRun) -> dict[str, Any]:
    """Run and return {"status": "done" | "skipped" | "failed", "reason"}; written to
    status.json unless done. Ctrl+C (KeyboardInterrupt) is not caught: the comparison stops."""
    folder = Path(run.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATUS_FILE).unlink(missing_ok=True)
    try:
        run_method(run)
        status = {"status": "done", "reason": None}
    except MethodUnavailable as err:
        status = {"status": "skipped", "reason": str(err)}
    except Exception as err:  # a failed run is recorded; the comparison goes on
        traceback.print_exc()
        status = {"status": "failed", "reason": f"{type(err).__name__}: {err}"}
    if status["status"] != "done":
        write_json(folder / STATUS_FILE, status)
    return status


def main(argv: list[str]) -> int:
    (spec,) = argv
    run = MethodRun(**json.loads(Path(spec).read_text(encoding="utf-8")))
    return 0 if execute(run)["status"] != "failed" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
