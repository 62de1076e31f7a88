"""What the RL baselines (TRL GRPO and RLOO, PPO) share with SuperHF and with each other.

A baseline is only a fair row of `superhf compare` when it trains on the prompts SuperHF trains
on, in the same order, scored by the same reward reading the same text, and stops at the same
number of sampled completion tokens. This module is that common ground, free of TRL (the PPO
baseline imports it in an environment with another TRL version):

- `split_prompts`: `superhf.data`'s prompts in `SuperHFTrainer`'s seeded order, with its
  held-out prompts; `InRunEvaluation`: SuperHF's evaluation along the run on them;
- `BaselineReward`: superhf's `RewardScorer` behind TRL's reward-function signature: each
  sampled id row is cut exactly as `superhf.generation.trim_completion` cuts SuperHF's samples,
  and its prompt is the superhf `Prompt` it came from (`Prompt.prompt`, not the text the
  policy saw), so a reward model reads byte for byte what it reads in a SuperHF run;
- `ProgressLog`: progress.jsonl, one `ProgressRecord` per update, and the token budget;
- `write_run_files`: the adapter, tokenizer, config.yaml, settings.json and done.json (last).
"""

from __future__ import annotations

import json
import random
import resource
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml

from superhf.compare.spec import (
    DONE_FILE,
    PROGRESS_FILE,
    SETTINGS_FILE,
    MethodRun,
    ProgressRecord,
)
from superhf.config import EvalConfig, SuperHFConfig
from superhf.data import Prompt, load_prompt_dataset, prepare_prompts
from superhf.errors import ConfigError
from superhf.files import CONFIG_FILE, json_safe, write_text_atomic
from superhf.generation import Completion, trim_completion
from superhf.rewards.scoring import RewardScorer, load_reward_funcs

SUPERHF_EXTRA = {
    "stop_sequences": "where completions are cut before scoring (SuperHF's stop_sequences)",
    "num_eval_prompts": "prompts held out of the same shuffled order, as SuperHF holds them out "
    "for its evaluation along the run (default 0)",
    "eval_steps": "updates between evaluations along the run on those prompts, and after the "
    "last update (SuperHF's eval_steps; TRL's own eval_steps needs an eval dataset, unused "
    "here); 0 or unset: none",
}
"""Keys of `MethodRun.extra` that are superhf's, not the trainer's; everything else in `extra`
is a field of the method's TRL config."""


def split_extra(run: MethodRun) -> tuple[dict[str, Any], dict[str, Any]]:
    """(superhf's settings from `run.extra`, the rest: the TRL config's overrides)."""
    ours = {k: v for k, v in run.extra.items() if k in SUPERHF_EXTRA}
    theirs = {k: v for k, v in run.extra.items() if k not in SUPERHF_EXTRA}
    return ours, theirs


def check_trl_overrides(overrides: dict[str, Any], config_cls: type, method: str) -> None:
    """ConfigError naming every key of `extra` that is not a field of the TRL config."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(
            f"extra: {unknown} are not fields of {config_cls.__name__} ({method}) nor superhf's "
            f"own ({sorted(SUPERHF_EXTRA)}); check the spelling against the TRL documentation."
        )


def quiet_trl_args() -> dict[str, Any]:
    """The TRL config values (GRPO, RLOO, PPO alike) that leave out what a comparison run does
    not use: no evaluation, no checkpoints, no hub, no trackers, no progress bar; a log line
    every step."""
    return {
        "eval_strategy": "no",
        "save_strategy": "no",
        "push_to_hub": False,
        "report_to": "none",
        "logging_steps": 1,
        "disable_tqdm": True,
    }


def stop_sequences(run: MethodRun) -> list[str]:
    """Where completions are cut before scoring: `extra["stop_sequences"]`, else SuperHF's."""
    value = run.extra.get("stop_sequences", SuperHFConfig().stop_sequences)
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ConfigError(f"extra.stop_sequences must be a list of strings, got {value!r}.")
    return list(value)


def split_prompts(run: MethodRun, tokenizer: Any) -> tuple[list[Prompt], list[Prompt]]:
    """(training prompts, held-out prompts) of the run, as `SuperHFTrainer` makes and orders
    them.

    `superhf.data.load_prompt_dataset` + `prepare_prompts` with the run's dataset, split,
    `apply_chat_template` and `max_prompt_length`; then the trainer's one seeded shuffle, whose
    last `extra["num_eval_prompts"]` (default 0) are held out for the evaluation along the run.
    Fed in this order without shuffling, update k of a baseline samples the prompts of
    SuperHF's iteration k (while both have the same number of prompts per update).
    """
    dataset = load_prompt_dataset(run.dataset_name, None, run.dataset_train_split)
    prompts, _ = prepare_prompts(
        dataset,
        tokenizer,
        run.max_prompt_length,
        source=run.dataset_name,
        apply_chat_template=run.apply_chat_template,
    )
    num_eval = run.extra.get("num_eval_prompts", 0)
    if not isinstance(num_eval, int) or not 0 <= num_eval < len(prompts):
        raise ConfigError(
            f"extra.num_eval_prompts={num_eval!r}: give an integer from 0 to {len(prompts) - 1} "
            f"({len(prompts)} usable prompts)."
        )
    order = list(range(len(prompts)))
    random.Random(run.seed).shuffle(order)  # SuperHFTrainer.__init__'s shuffle
    cut = len(order) - num_eval
    return [prompts[i] for i in order[:cut]], [prompts[i] for i in order[cut:]]


def training_prompts(run: MethodRun, tokenizer: Any) -> list[Prompt]:
    """The run's training prompts in SuperHF's order (`split_prompts`)."""
    return split_prompts(run, tokenizer)[0]


class BaselineReward:
    """superhf's reward as a TRL reward function, counting the completion tokens it is shown.

    Called with the sampled completion ids and each sample's index into `prompts`; returns
    `RewardScorer`'s weighted totals (length penalty 0, as `MethodRun` has none). Empty
    completions, which SuperHF drops before scoring, are scored as the empty text here: an
    on-policy trainer needs a reward for every sample.
    """

    __name__ = "superhf_reward"

    def __init__(
        self,
        prompts: Sequence[Prompt],
        scorer: Any,
        tokenizer: Any,
        stop_ids: Sequence[int],
        stop_sequences: Sequence[str],
    ):
        self.prompts = list(prompts)
        self.scorer = scorer
        self.tokenizer = tokenizer
        self.stop_ids = list(stop_ids)
        self.stop_sequences = list(stop_sequences)
        self.sampled_tokens = 0
        """Completion tokens sampled so far (through the stop token; prompts never count)."""
        self.count_on_score = True
        """Count the scored ids; False where the trainer counts them as sampled (`count`),
        before cutting them at a stop sequence (the TRL baselines)."""
        self.step_rewards: list[float] = []
        """Totals since the last `take_step_rewards`."""
        self.stage_seconds = {"sampling": 0.0, "scoring": 0.0}
        """Seconds since the last `take_stage_seconds` (sampling: timed by the trainer)."""
        self.generation_rounds = 0
        """Sampling rounds so far (counted by the trainer): an update may reuse a round."""
        self.last_samples: list[tuple[int, list[int]]] = []
        """The latest call's (prompt index, sampled completion ids), for tests and debugging."""

    def completion(self, ids: Sequence[int], prompt_index: int = 0) -> Completion:
        """The sampled ids cut as SuperHF cuts its samples: the text a reward reads."""
        return trim_completion(
            [int(t) for t in ids], self.stop_ids, self.stop_sequences, self.tokenizer, prompt_index
        )

    def score_ids(self, prompt_indices: Sequence[int], completion_ids: Sequence[Sequence[int]]):
        """Score sampled id rows of the prompts `prompt_indices` (indices into `prompts`)."""
        started = time.perf_counter()
        completions = [
            self.completion(ids, int(i))
            for i, ids in zip(prompt_indices, completion_ids, strict=True)
        ]
        if self.count_on_score:
            self.count(completion_ids)
        self.last_samples = [
            (int(i), [int(t) for t in ids])
            for i, ids in zip(prompt_indices, completion_ids, strict=True)
        ]
        sample_prompts = [self.prompts[c.prompt_index] for c in completions]
        columns = {
            key: [p.columns.get(key) for p in sample_prompts]
            for key in (sample_prompts[0].columns if sample_prompts else {})
        }
        scores = self.scorer(
            [p.prompt for p in sample_prompts], [c.text for c in completions], columns
        )
        self.step_rewards += scores.total
        self.stage_seconds["scoring"] += time.perf_counter() - started
        return scores.total

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]],
        superhf_index: Sequence[int],
        **_: Any,
    ) -> list[float]:
        """TRL's signature; `superhf_index` is the dataset column naming each sample's Prompt."""
        return self.score_ids(superhf_index, completion_ids)

    def count(self, completion_ids: Sequence[Sequence[int]]) -> None:
        """Add sampled id rows to `sampled_tokens`: every id through the stop token, as
        `Completion.num_tokens` counts SuperHF's."""
        self.sampled_tokens += sum(len(ids) for ids in completion_ids)

    def take_stage_seconds(self) -> dict[str, float]:
        seconds, self.stage_seconds = self.stage_seconds, dict.fromkeys(self.stage_seconds, 0.0)
        return seconds

    def take_step_rewards(self) -> list[float]:
        rewards, self.step_rewards = self.step_rewards, []
        return rewards


class InRunEvaluation:
    """The held-out evaluation along a baseline's run, as `SuperHFTrainer.evaluate` makes it:
    the same prompts (`split_prompts`' held-out ones), the paper's eval sampling with the run's
    length and stop sequences (`eval_config`), the same per-prompt seeds, train reward and
    test reward model; every `extra["eval_steps"]` updates and after the last."""

    def __init__(self, run: MethodRun, prompts: Sequence[Prompt], scorer: RewardScorer):
        every = run.extra.get("eval_steps", 0)
        if not isinstance(every, int) or every < 0:
            raise ConfigError(f"extra.eval_steps={every!r}: give an integer >= 0 (0: none).")
        self.every = every if prompts else 0
        self.prompts = list(prompts)
        self.scorer = scorer
        self.config = eval_config(run)
        self.seed = run.seed
        self.test_scorer = None
        if run.test_reward_model is not None and self.every:
            funcs, _ = load_reward_funcs([run.test_reward_model])
            self.test_scorer = RewardScorer(funcs)

    def due(self, step: int, last: bool) -> bool:
        return self.every > 0 and (step % self.every == 0 or last)

    def __call__(self, model: Any, tokenizer: Any) -> tuple[dict[str, float], float]:
        """(`generate_and_score`'s numbers for the policy in memory, the seconds it took)."""
        from superhf.evaluation.heldout import generate_and_score

        started = time.perf_counter()
        was_training = model.training
        numbers = generate_and_score(
            model,
            tokenizer,
            self.prompts,
            self.config,
            self.scorer,
            self.test_scorer,
            meteor_pairs=200,  # SuperHFTrainer.evaluate's
            seed=self.seed,
        )
        model.train(was_training)
        return numbers, time.perf_counter() - started


def eval_config(run: MethodRun) -> EvalConfig:
    """The sampling of SuperHF's evaluation along the run (`EvalConfig.from_train_config`):
    the paper's eval defaults with the run's completion length and stop sequences."""
    return EvalConfig(
        max_completion_length=run.max_completion_length,
        stop_sequences=stop_sequences(run),
        seed=run.seed,
    )


def peak_memory_mb() -> float:
    """Peak accelerator memory on a GPU, else the process's peak resident memory (ru_maxrss)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class ProgressLog:
    """progress.jsonl, one line per update; started afresh, or from a checkpoint's lines
    (`load_state_dict`)."""

    def __init__(self, output_dir: str | Path, sampled_token_budget: int):
        self.path = Path(output_dir) / PROGRESS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("", encoding="utf-8")
        self.budget = sampled_token_budget
        self.start = time.perf_counter()
        self.records: list[ProgressRecord] = []

    def state_dict(self) -> dict[str, Any]:
        """The lines so far, for a checkpoint (`superhf.compare.baseline_checkpoint`)."""
        return {"records": [json_safe(asdict(record)) for record in self.records]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go on from a checkpoint's lines: the file holds them again, and the wall time goes
        on from the last one's (the time lost to the stop is not the run's)."""
        self.records = [ProgressRecord(**record) for record in state["records"]]
        lines = (json.dumps(json_safe(asdict(r))) + "\n" for r in self.records)
        write_text_atomic(self.path, "".join(lines))
        self.start = time.perf_counter() - (self.records[-1].wall_time_s if self.records else 0)

    def record(
        self,
        step: int,
        sampled_tokens: int,
        rewards: Sequence[float],
        evaluation: dict[str, float] | None = None,
        eval_time_s: float = 0.0,
        stages: dict[str, float] | None = None,
    ) -> ProgressRecord:
        """One update's line. `evaluation`: the in-run held-out numbers of this step
        (`InRunEvaluation`); their `eval_time_s` is left out of wall_time_s from here on, as
        SuperHF's progress leaves out its evaluations (training time only). `stages`: this
        update's sampling and scoring seconds; the rest of its time is the update's."""
        self.start += eval_time_s
        mean = sum(rewards) / len(rewards) if rewards else float("nan")
        wall = time.perf_counter() - self.start
        return self._append(step, sampled_tokens, mean, wall, evaluation, stages)

    def record_start(self, evaluation: dict[str, float], eval_time_s: float) -> ProgressRecord:
        """Step 0: the start policy's in-run evaluation (nothing sampled for training yet)."""
        self.start += eval_time_s
        return self._append(0, 0, None, 0.0, evaluation)

    def _append(
        self,
        step: int,
        sampled_tokens: int,
        train_reward: float | None,
        wall_time_s: float,
        evaluation: dict[str, float] | None,
        stages: dict[str, float] | None = None,
    ) -> ProgressRecord:
        evaluation = evaluation or {}
        previous = self.records[-1].wall_time_s if self.records else 0.0
        timed = {}
        if stages is not None:
            rest = wall_time_s - previous - stages["sampling"] - stages["scoring"]
            timed = {
                "seconds_sampling": stages["sampling"],
                "seconds_scoring": stages["scoring"],
                "seconds_update": max(rest, 0.0),
            }
        record = ProgressRecord(
            step=step,
            sampled_tokens=sampled_tokens,
            train_reward=train_reward,
            wall_time_s=wall_time_s,
            peak_memory_mb=peak_memory_mb(),
            eval_reward=evaluation.get("reward"),
            eval_test_reward=evaluation.get("test_reward"),
            **timed,
        )
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(json_safe(asdict(record))) + "\n")
        self.records.append(record)
        return record

    def budget_reached(self, sampled_tokens: int) -> bool:
        return sampled_tokens >= self.budget


def max_updates(run: MethodRun, completions_per_update: int) -> int:
    """An upper bound on the updates the budget allows (every completion one token long):
    the trainer's step limit, so that the budget, not the limit, ends the run."""
    return max(1, -(-run.sampled_token_budget // completions_per_update))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(json_safe(data), indent=2, default=str) + "\n")


def write_run_files(
    run: MethodRun,
    model: Any,
    tokenizer: Any,
    settings: dict[str, Any],
    progress: ProgressLog,
    stop_reason: str,
    optimizer_steps: int | None = None,
    generation_rounds: int | None = None,
    resumed_from_step: int | None = None,
) -> None:
    """The policy (a PEFT adapter) and tokenizer, config.yaml, settings.json, then done.json
    (with the optimizer steps the run took, and the update it last resumed from, if any)."""
    out = Path(run.output_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    config = {**run.to_dict(), "model_name_or_path": run.model_name_or_path}
    (out / CONFIG_FILE).write_text(yaml.safe_dump(json_safe(config), sort_keys=False), "utf-8")
    write_json_atomic(out / SETTINGS_FILE, settings)
    last = progress.records[-1] if progress.records else None
    write_json_atomic(
        out / DONE_FILE,
        {
            "method": run.method,
            "steps": last.step if last else 0,
            "optimizer_steps": optimizer_steps,
            "generation_rounds": generation_rounds,
            "sampled_tokens": last.sampled_tokens if last else 0,
            "sampled_token_budget": run.sampled_token_budget,
            "wall_time_s": last.wall_time_s if last else 0.0,
            "peak_memory_mb": last.peak_memory_mb if last else peak_memory_mb(),
            "stop_reason": stop_reason,
            "resumed_from_step": resumed_from_step,
        },
    )


def prompt_ids_match(prompts: Sequence[Prompt], tokenizer: Any, ids: Sequence[Sequence[int]]):
    """Whether `ids` (a trainer's encoding of each prompt's text) are superhf's own
    (`superhf.batching.encode_prompt`): a baseline's policy must see what SuperHF's sees."""
    from superhf.batching import encode_prompt

    return all(
        list(row) == encode_prompt(tokenizer, p.text) for p, row in zip(prompts, ids, strict=True)
    )
