"""The reward-hacking monitor for any `transformers.Trainer`, TRL's GRPO and RLOO included.

    monitor = RewardHackingCallback(heldout_prompts, reward_funcs=[my_reward], eval_steps=5)
    trainer = GRPOTrainer(..., reward_funcs=[monitor.watch(my_reward)], callbacks=[monitor])

Every `eval_steps` optimizer steps (and before the first) it answers the held-out prompts as
`superhf train` evaluates (the paper's eval sampling, a seed per prompt), scores them with the
train reward (and a `test_reward_model` that never drives training), and reads the same
signals as SuperHF's own monitor; `watch` lets it read the training samples the reward sees
too, at no extra generation. Each step's row goes to `monitor.jsonl` in the trainer's
output_dir (the answers to eval_completions.jsonl), so `superhf monitor DIR` replays it; a
warning goes to the `superhf.monitor` logger and, with `stop_on_reward_hacking`, stops
training.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from superhf.config import EvalConfig, SamplingSettings
from superhf.data import Prompt
from superhf.evaluation.heldout import answer_rows, sample_and_score, summarize_eval
from superhf.evaluation.monitor import RewardHackingMonitor
from superhf.evaluation.signals import policy_signals, text_signals
from superhf.files import EVAL_COMPLETIONS_FILE, MONITOR_FILE, read_json_lines
from superhf.generation import Completion
from superhf.rewards.scoring import RewardScorer, load_reward_funcs

logger = logging.getLogger("superhf.monitor")


def as_prompts(prompts: Sequence[str | Prompt]) -> list[Prompt]:
    """Plain strings become `Prompt`s rendered as given (apply a chat template beforehand)."""
    return [p if isinstance(p, Prompt) else Prompt(prompt=p, text=p) for p in prompts]


class RewardHackingCallback(TrainerCallback):
    """Answers held-out prompts along training and warns when the policy starts to hack its
    reward (`superhf.evaluation.monitor`; docs/MONITOR.md says what it catches and misses)."""

    def __init__(
        self,
        prompts: Sequence[str | Prompt],
        reward_funcs: Sequence[str | Callable[..., Any]] | RewardScorer = ("default",),
        reward_weights: Sequence[float] | None = None,
        test_reward_model: str | Callable[..., Any] | RewardScorer | None = None,
        eval_steps: int = 5,
        sampling: SamplingSettings | None = None,
        monitor: RewardHackingMonitor | None = None,
        output_dir: str | Path | None = None,
        stop_on_reward_hacking: bool = False,
        reference_model: Any = None,
        seed: int = 0,
        sampled_tokens: Callable[[], int] | None = None,
        due: Callable[[int, Any], bool] | None = None,
    ):
        if eval_steps < 1:
            raise ValueError(f"eval_steps must be >= 1, got {eval_steps}.")
        if len(prompts) < 2:
            raise ValueError("prompts: give at least 2 held-out prompts (METEOR compares pairs).")
        self.prompts = as_prompts(prompts)
        self.scorer = _scorer(reward_funcs, reward_weights)
        self.test_scorer = None if test_reward_model is None else _scorer(test_reward_model)
        self.eval_steps = eval_steps
        self.sampling = sampling or EvalConfig()
        self.monitor = monitor or RewardHackingMonitor()
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.stop_on_reward_hacking = stop_on_reward_hacking
        self.reference_model = reference_model
        self.seed = seed
        self.sampled_tokens = sampled_tokens
        """Training tokens sampled so far, as the caller counts them; default: the token ids
        (else words) of the samples `watch` saw."""
        self.due = due or self.every_eval_steps
        """(step, TrainerState) -> whether to evaluate after this step."""
        self.evaluations: dict[int, tuple[dict[str, Any], float]] = {}
        """Each evaluation's numbers (`generate_and_score`'s keys) and seconds, by step: a
        caller that logs its own evaluation (superhf compare) reads them instead of sampling
        again."""
        self.rows: list[dict[str, Any]] = []
        """Every row fed to the monitor, as monitor.jsonl holds them."""
        self.warnings: list[dict[str, Any]] = []
        self._samples: list[tuple[str, str, int]] = []
        self._sampled_tokens = 0
        self._pending: dict[str, Any] | None = None
        self._resumed = False

    # --- resuming with a trainer checkpoint ----------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to monitor on as if never stopped (JSON-able): the
        monitor's history, the rows so far and the warnings. Taken at the end of an update."""
        return {
            "monitor": asdict(self.monitor),
            "rows": self.rows,
            "pending": self._pending,
            "warnings": self.warnings,
            "sampled_tokens": self._sampled_tokens,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go on from `state_dict()`'s update: training then begins without the start's
        evaluation, and the run's files keep only the rows up to that update."""
        saved = dict(state["monitor"])
        saved["eval_test_reward"] = [tuple(pair) for pair in saved["eval_test_reward"]]
        self.monitor = RewardHackingMonitor(**saved)
        self.rows = list(state["rows"])
        self._pending = state["pending"]
        self.warnings = list(state["warnings"])
        self._sampled_tokens = state["sampled_tokens"]
        self._resumed = True

    def _truncate_files(self) -> None:
        """monitor.jsonl and eval_completions.jsonl as they were at the resumed update (a line
        torn by the stop, written after it, goes too)."""
        last = max((row["iteration"] for row in [*self.rows, self._pending] if row), default=-1)
        assert self.output_dir is not None
        (self.output_dir / MONITOR_FILE).write_text("", encoding="utf-8")
        self._append(MONITOR_FILE, self.rows)
        answers = self.output_dir / EVAL_COMPLETIONS_FILE
        text = answers.read_text(encoding="utf-8") if answers.is_file() else ""
        lines = read_json_lines(text, str(answers), EVAL_COMPLETIONS_FILE, skip_bad=True)
        kept = [x.value for x in lines if x.value and x.value.get("iteration", last + 1) <= last]
        answers.write_text("", encoding="utf-8")
        self._append(EVAL_COMPLETIONS_FILE, kept)

    # --- the training samples, read where the reward reads them ---------------------------
    def watch(self, reward_func: Callable[..., Any]) -> Callable[..., Any]:
        """`reward_func` unchanged, except that the monitor also reads the samples it scores
        (TRL's reward signature: prompts, completions, completion_ids, ...)."""

        @functools.wraps(reward_func)
        def watched(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> Any:
            self.record_samples(prompts, completions, kwargs.get("completion_ids"))
            return reward_func(prompts=prompts, completions=completions, **kwargs)

        return watched

    def record_samples(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
    ) -> None:
        """Training samples of the current step (conversational ones by their last content)."""
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            text = _text(completion)
            length = len(completion_ids[i]) if completion_ids is not None else len(text.split())
            self._samples.append((str(prompt), text, length))
            self._sampled_tokens += length

    # --- TrainerCallback -----------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.output_dir is None:
            self.output_dir = Path(args.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self._resumed:  # the start was evaluated before the stop
            self._truncate_files()
            return control
        for name in (MONITOR_FILE, EVAL_COMPLETIONS_FILE):
            (self.output_dir / name).write_text("", encoding="utf-8")
        self._feed(state.global_step, self.evaluate(kwargs["model"], kwargs, state.global_step))
        self._flush()
        return control

    def every_eval_steps(self, step: int, state: Any) -> bool:
        """The default `due`: every `eval_steps` steps and after the last."""
        return step % self.eval_steps == 0 or (state.max_steps > 0 and step >= state.max_steps)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self._flush()
        step = state.global_step
        row: dict[str, Any] = {}
        if self._samples:
            row |= {f"completions/{k}": v for k, v in self._sample_signals().items()}
            self._samples = []
        if self.due(step, state):
            row |= self.evaluate(kwargs["model"], kwargs, step)
        if self._feed(step, row) and self.stop_on_reward_hacking:
            control.should_training_stop = True
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> Any:
        """TRL logs its KL to the reference (beta > 0) after the step's end: the monitor reads
        it into that step's row, which is written at the next step (or the end)."""
        kl = (logs or {}).get("kl")
        row = self._pending
        if (
            isinstance(kl, int | float)
            and row is not None
            and row["iteration"] == state.global_step
        ):
            row["kl"] = float(kl)
            warning = self.monitor.update({"iteration": row["iteration"], "kl": float(kl)})
            if warning:
                row["reward_hacking"] = "; ".join(filter(None, [row["reward_hacking"], warning]))
                row["reward_hacking_signals"] += self.monitor.fired
                self._warn(row["iteration"], warning)
                if self.stop_on_reward_hacking:
                    control.should_training_stop = True
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self._flush()
        return control

    # --- the evaluation and the monitor ----------------------------------------------------
    def evaluate(self, model: Any, kwargs: dict[str, Any], step: int) -> dict[str, Any]:
        """The held-out answers' numbers (`eval_*`), as `SuperHFTrainer.evaluate` logs them."""
        started = time.perf_counter()
        tokenizer = kwargs.get("processing_class") or kwargs.get("tokenizer")
        was_training = model.training
        completions, rewards, test = sample_and_score(
            model, tokenizer, self.prompts, self.sampling, self.scorer, self.test_scorer, self.seed
        )
        results = summarize_eval(self.prompts, completions, rewards, test, 200, self.seed)
        reference = self.reference_model
        if reference is None and hasattr(model, "disable_adapter"):
            reference = model
        texts = [p.text for p in self.prompts]
        results |= policy_signals(model, reference, tokenizer, texts, completions)
        model.train(was_training)
        self.evaluations[step] = (dict(results), time.perf_counter() - started)
        self._append(
            EVAL_COMPLETIONS_FILE,
            [
                {"iteration": step, **row}
                for row in answer_rows(self.prompts, completions, rewards, test)
            ],
        )
        return {f"eval_{key}": value for key, value in results.items()}

    def _sample_signals(self) -> dict[str, float]:
        index: dict[str, int] = {}
        prompts, completions = [], []
        for prompt, text, length in self._samples:
            if prompt not in index:
                index[prompt] = len(prompts)
                prompts.append(Prompt(prompt=prompt, text=prompt))
            completions.append(Completion(index[prompt], text, length, False))
        return text_signals(prompts, completions, meteor_pairs=100, seed=self.seed)

    def _feed(self, step: int, row: dict[str, Any]) -> str | None:
        """Feed the monitor a step's row; it is written once TRL's logs of the step are in."""
        tokens = self.sampled_tokens() if self.sampled_tokens else self._sampled_tokens
        row = {"iteration": step, "num_sampled_tokens_total": tokens, **row}
        warning = self.monitor.annotate(row)
        self._pending = row
        if warning:
            self._warn(step, warning)
        return warning

    def _warn(self, step: int, warning: str) -> None:
        self.warnings.append({"iteration": step, "warning": warning})
        logger.warning("Reward hacking? step %d: %s.", step, warning)

    def _flush(self) -> None:
        if self._pending is not None:
            self.rows.append(self._pending)
            self._append(MONITOR_FILE, [self._pending])
            self._pending = None

    def _append(self, name: str, rows: list[dict[str, Any]]) -> None:
        if self.output_dir is None:
            return
        with (self.output_dir / name).open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(_jsonable(row)) + "\n")


def _scorer(
    funcs: Sequence[str | Callable[..., Any]] | str | Callable[..., Any] | RewardScorer,
    weights: Sequence[float] | None = None,
) -> RewardScorer:
    if isinstance(funcs, RewardScorer):
        return funcs
    if isinstance(funcs, str) or callable(funcs):
        funcs = [funcs]
    loaded, loaded_weights = load_reward_funcs(list(funcs), weights)
    return RewardScorer(loaded, loaded_weights)


def _text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()
    }
