"""SuperHFTrainer: the sample -> score -> filter -> fine-tune loop (docs/METHOD.md, section 2).

    from superhf import SuperHFConfig, SuperHFTrainer
    trainer = SuperHFTrainer(args=SuperHFConfig(max_iterations=20, output_dir="runs/demo"))
    trainer.train()

Each iteration takes `prompts_per_iteration` unused prompts, samples `num_generations`
completions for each, scores them, keeps the best `num_kept_per_prompt` of each prompt, and
makes one pass of minibatch updates on the kept samples with CE + beta * KL. The scheduler
steps once per iteration; nothing carries over between iterations.

The filter's options (all off by default; `SuperHFConfig` documents them): `num_train_epochs`
passes over the kept samples, `sample_weighting` and `negative_weight` (weights per sample,
`train/filtering.py`, entering `train/loss.py` as a tensor), `skip_uniform_prompts`.

This file is the loop, read top to bottom: `train` -> `step` -> its stages. The rest lives
beside it: the optimizer step and the out-of-memory back-off in `train/update.py`, checkpoints
in `train/checkpoint.py`, the learning-rate schedule in `train/schedule.py`, the logs in
`train/run_log.py`, the work of many processes in `train/distributed.py`.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset
from rich.console import Console
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from superhf.config import EvalConfig, SuperHFConfig
from superhf.console import make_console, progress_bar
from superhf.data import Prompt
from superhf.errors import TrainingError
from superhf.evaluation.heldout import answer_rows, fork_all_rng, sample_and_score, summarize_eval
from superhf.evaluation.monitor import RewardHackingMonitor
from superhf.evaluation.signals import policy_signals, text_signals
from superhf.evaluation.summary import run_summary
from superhf.files import EVAL_COMPLETIONS_FILE
from superhf.generation import Completion, GenerationStats, generate_completions
from superhf.rewards.scoring import Scores
from superhf.sampling_model import native_bf16
from superhf.train import build, run_log
from superhf.train.checkpoint import CheckpointError, TrainingState, resumed_log_sizes
from superhf.train.distributed import Processes, make_accelerator, on_stop_signals, prompt_seeds
from superhf.train.filtering import select_training_samples
from superhf.train.run_log import RunLogger
from superhf.train.schedule import iteration_scheduler
from superhf.train.update import PolicyUpdate


class SuperHFTrainer:
    """TRL-shaped trainer: `model`, `reward_funcs`, `args`, `train_dataset`, `processing_class`,
    `peft_config`; then `train()` and `save_model()`.

    Anything not given comes from `args` (a SuperHFConfig): the model from
    `model_name_or_path`, prompts from `dataset_name`, rewards from `reward_funcs`.
    """

    def __init__(
        self,
        model: str | PreTrainedModel | None = None,
        reward_funcs: build.RewardSpec | Sequence[build.RewardSpec] | None = None,
        args: SuperHFConfig | None = None,
        train_dataset: Dataset | list[dict[str, Any]] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        peft_config: Any | None = None,
        test_reward_func: build.RewardSpec | None = None,
        console: Console | None = None,
    ):
        self.args = args = args or SuperHFConfig()
        self.console = console or make_console(stderr=False)
        self.accelerator = make_accelerator(args)
        self.processes = Processes(self.accelerator, args.output_dir)
        if not self.accelerator.is_main_process:
            self.console.quiet = True  # one process speaks; errors still reach stderr
        self.num_skipped_total = 0
        self.num_sampled_tokens = 0  # completion tokens sampled for training, whole run
        self.stop_signal: int | None = None  # set by SIGINT/SIGTERM during train()
        self.stop_reason: str | None = None  # why train() returned early, if it did
        model = model if model is not None else args.model_name_or_path
        if isinstance(model, str) and model != args.model_name_or_path:
            self.args = args = dataclasses.replace(args, model_name_or_path=model)

        # Cheap things first, so bad prompts or rewards fail before the model loads (`build`).
        self.tokenizer = build.tokenizer_for(model, processing_class)
        self.prompts, self.prompt_stats = build.load_prompts(
            train_dataset, self.tokenizer, args, self._warn
        )
        self.prompt_order, self.eval_prompts, self.num_iterations = build.split_prompts(
            self.prompts, args, self.console.print
        )
        self.scorer, self.test_scorer = build.load_scorers(
            reward_funcs, test_reward_func, args, str(self.accelerator.device)
        )
        policy, reference, optimizer = build.policy_and_optimizer(model, peft_config, args)
        # Not prepared by accelerate: it steps once per iteration, not per optimizer step.
        self.scheduler = iteration_scheduler(
            args.lr_scheduler_type, optimizer, args.warmup_steps, self.num_iterations
        )
        acc, processes = self.accelerator, self.processes
        self.update = update = PolicyUpdate(
            acc, processes, policy, optimizer, reference, self.tokenizer, args, self._warn
        )
        # The policy as prepared, its reference, the batch sizes in use: the update's.
        self.model, self.optimizer = update.model, update.optimizer
        self.reference, self.uses_adapter = update.reference, update.uses_adapter
        self.backoff = update.backoff
        self.training_state = TrainingState(
            update, self.scheduler, self.prompt_order, self.num_iterations
        )
        self.sampling_model = build.sampling_model(
            acc.unwrap_model(self.model), args, acc.device.type, processes.sharded
        )

    # ------------------------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None) -> list[dict[str, Any]]:
        """Run every iteration; returns the logged metrics (also in output_dir/metrics.jsonl).

        `resume_from_checkpoint`: a run folder (its newest valid checkpoint), a checkpoint
        folder, or True for output_dir; default `args.resume_from_checkpoint`. SIGINT and
        SIGTERM finish the current iteration, save a checkpoint and return early.
        """
        args = self.args
        history, resume_sizes = self._resume(resume_from_checkpoint)
        logger = self._start_run(history, resume_sizes)
        first = history[-1]["iteration"] + 1 if history else 1
        if first == 1 and self.eval_prompts and args.eval_on_start:
            self.console.print("Evaluating the starting policy on the held-out prompts ...")
            self._record({"iteration": 0, **self.evaluate(0, logger)}, history, logger)
        saved: Path | None = None
        with on_stop_signals(self._on_stop_signal), logger, progress_bar(self.console) as progress:
            task = progress.add_task("iterations", total=self.num_iterations, completed=first - 1)

            def status(text: str) -> None:
                progress.update(task, description=text)

            for iteration in range(first, self.num_iterations + 1):
                if self.budget_spent():  # resumed after the iteration that spent it
                    break
                prompts = self.prompts_of_iteration(iteration)
                metrics = self.step(
                    prompts, iteration, logger, lambda s, i=iteration: status(f"iteration {i}: {s}")
                )
                self._record(metrics, history, logger, progress.console)
                progress.update(task, advance=1, description="iterations")
                # A signal to any process stops every process after this same iteration.
                self.stop_signal = self.processes.max(self.stop_signal or 0) or None
                if self.stop_signal is not None and self.stop_reason is None:
                    self.stop_reason = signal.Signals(self.stop_signal).name
                too_many_skipped = self.num_skipped_total >= args.max_skipped_minibatches
                if self._save_due(iteration) or too_many_skipped:
                    status(f"iteration {iteration}: saving a checkpoint")
                    saved = self._save_checkpoint(iteration, history, logger)
                    status("iterations")
                if too_many_skipped:
                    raise TrainingError(
                        f"{self.num_skipped_total} minibatches had a NaN or inf loss or "
                        f"gradient (max_skipped_minibatches={args.max_skipped_minibatches}); "
                        f"stopped after iteration {iteration}. Lower learning_rate or check "
                        "the rewards; the weights were never updated with a non-finite value"
                        + (f" and are saved in {saved}." if saved else ".")
                    )
                if self.stop_reason is not None:
                    break
        if self.stop_reason is not None:
            where, done = (f" in {saved}" if saved else ""), history[-1]["iteration"]
            self._warn(
                f"Stopped by {self.stop_reason} after iteration {done} of "
                f"{self.num_iterations}; saved{where}. Continue with: "
                f"superhf train --resume {args.output_dir}"
            )
            return history
        for line in run_summary(history, len(self.eval_prompts)):
            self.console.print(line)
        self.save_model()
        self.processes.barrier("finishing the run")
        self.accelerator.end_training()
        return history

    def step(
        self,
        prompts: list[Prompt],
        iteration: int,
        logger: RunLogger | None = None,
        status: Callable[[str], None] = lambda _: None,
    ) -> dict[str, Any]:
        """One iteration on `prompts`: sample -> score -> keep the best -> fine-tune.

        On many processes each samples and scores its block of the prompts; the results are
        gathered, so every process filters and logs the whole iteration (`distributed`).
        """
        args = self.args
        self.backoff.num_retries = 0
        times = [time.perf_counter()]
        # Sample: this process's block of the prompts, each from its own seed.
        status("generating")
        block = self.processes.block(len(prompts))
        mine = [prompts[i] for i in block]
        seeds = prompt_seeds(args.seed, iteration, block.start, len(mine))
        # The policy's weights now (after updates, a resume); once, outside the out-of-memory
        # retries: under FSDP a refresh is a collective, and a retry may run on one process.
        self.sampling_model.refresh()
        completions, generation = self.backoff.run(
            "generation_batch_size", lambda size: self.sample(mine, size, seeds)
        )
        self.backoff.generation_batch_size = self.processes.min(self.backoff.generation_batch_size)
        times.append(time.perf_counter())
        # Score, then gather every process's samples and scores.
        status("scoring")
        scores = self.processes.gather_scores(self.score(mine, completions))
        gathered = self.processes.gather_samples(block.start, completions, generation)
        completions, generation = gathered
        self.num_sampled_tokens += generation.num_sampled_tokens  # every process's
        # Filter: the best of each prompt (and the options' weights, negatives and skips).
        selection = select_training_samples(
            scores.total,
            [c.prompt_index for c in completions],
            args.num_kept_per_prompt,
            args.sample_weighting,
            args.negative_weight,
            args.skip_uniform_prompts,
        )
        kept = selection.kept
        sample_signals = text_signals(prompts, completions, meteor_pairs=100, seed=args.seed)
        times.append(time.perf_counter())
        # Fine-tune on what was kept; the schedule steps once per iteration.
        status("fine-tuning")
        train_metrics = self.fine_tune(
            [completions[i] for i in selection.indices],
            prompts,
            selection.weights,
            shuffle_seed=f"{args.seed}:{iteration}",
        )
        train_metrics["num_skipped_prompts"] = selection.num_skipped_prompts
        train_metrics["num_negatives"] = selection.num_negatives
        learning_rate = self.optimizer.param_groups[0]["lr"]  # the rate this iteration used
        self.scheduler.step()
        times.append(time.perf_counter())
        # Evaluate every eval_steps iterations and at the end.
        eval_metrics = {}
        last = iteration == self.num_iterations or self.budget_spent()
        if iteration % args.eval_steps == 0 or last:
            status("evaluating")
            eval_metrics = self.evaluate(iteration, logger) if self.eval_prompts else {}
            eval_metrics |= self.evaluate_kept(prompts, completions, scores, kept)
        times.append(time.perf_counter())
        # Log: the iteration's metrics (`train` records them) and its completions.
        metrics = run_log.iteration_metrics(
            iteration, completions, generation, scores, kept, train_metrics, times
        )
        metrics |= {
            "learning_rate": learning_rate,
            "num_skipped_minibatches_total": self.num_skipped_total,
            "num_oom_retries": self.processes.max(self.backoff.num_retries),  # sampling + tuning
            "generation_batch_size": self.backoff.generation_batch_size,
            "train_micro_batch_size": self.backoff.train_micro_batch_size,
            "num_sampled_tokens": generation.num_sampled_tokens,
            "num_sampled_tokens_total": self.num_sampled_tokens,
            "peak_memory_mb": run_log.peak_memory_mb(),
            **{f"completions/{k}": v for k, v in sample_signals.items() if k != "mean_length"},
            **eval_metrics,
        }
        if logger is not None and args.log_completions:
            logger.log_completions(
                run_log.completion_rows(
                    iteration, prompts, completions, scores, kept, args.log_all_completions
                )
            )
        return metrics

    def sample(
        self, prompts: list[Prompt], batch_size: int, seeds: list[int] | None = None
    ) -> tuple[list[Completion], GenerationStats]:
        """`num_generations` completions of each prompt from the policy as last refreshed
        (in `sampling_dtype`: `SamplingModel`; `step` refreshes it before sampling); `seeds`:
        one per prompt (`generate_completions`), as `step` gives them."""
        with self.accelerator.autocast():
            model, texts = self.sampling_model.model, [p.text for p in prompts]
            return generate_completions(model, self.tokenizer, texts, self.args, batch_size, seeds)

    def score(self, prompts: list[Prompt], completions: list[Completion]) -> Scores:
        """The training reward of each completion (its prompt and dataset columns given)."""
        sample_prompts = [prompts[c.prompt_index] for c in completions]
        columns = {
            key: [p.columns.get(key) for p in sample_prompts]
            for key in (sample_prompts[0].columns if sample_prompts else {})
        }
        return self.scorer(
            [p.prompt for p in sample_prompts], [c.text for c in completions], columns
        )

    def fine_tune(
        self,
        samples: list[Completion],
        prompts: list[Prompt],
        weights: list[float] | None = None,
        shuffle_seed: str = "",
    ) -> dict[str, float]:
        """`num_train_epochs` passes of optimizer steps over the kept samples (with `weights`
        per sample, if any): `PolicyUpdate.fine_tune`. Counts the steps skipped as non-finite."""
        metrics = self.update.fine_tune(samples, prompts, weights, shuffle_seed)
        self.num_skipped_total += metrics["num_skipped_minibatches"]
        return metrics

    def evaluate(self, iteration: int = 0, logger: RunLogger | None = None) -> dict[str, float]:
        """The held-out prompts, answered with the paper's eval sampling, scored, compared.

        Its random stream is its own (forked and seeded), so evaluating never changes training.
        On many processes each answers and scores its block of the prompts; all are gathered.
        With a `logger` (and `log_completions`), the answers go to eval_completions.jsonl
        under `iteration`.
        """
        trained = policy = self.accelerator.unwrap_model(self.model)
        if self.processes.sharded:  # its forward is a collective: answer from the whole copy
            self.sampling_model.refresh()
            policy = self.sampling_model.model
        config = EvalConfig.from_train_config(self.args)
        block = self.processes.block(len(self.eval_prompts))
        mine = [self.eval_prompts[i] for i in block]
        with self.accelerator.autocast():
            completions, rewards, test = sample_and_score(
                policy,
                self.tokenizer,
                mine,
                config,
                self.scorer,
                self.test_scorer,
                seed=self.args.seed,
                first=block.start,
            )
        completions, _ = self.processes.gather_samples(block.start, completions)
        rewards, test = self.processes.gather_scores(rewards), self.processes.gather_scores(test)
        if logger is not None and self.args.log_completions:
            rows = answer_rows(self.eval_prompts, completions, rewards, test)
            logger.log_completions(
                [{"iteration": iteration, **row} for row in rows], EVAL_COMPLETIONS_FILE
            )
        results = summarize_eval(
            self.eval_prompts, completions, rewards, test, meteor_pairs=200, seed=self.args.seed
        )
        # Entropy and exact KL to the start (under FSDP a collective over the gathered answers).
        reference = trained if hasattr(trained, "disable_adapter") else self.update.reference
        with self.accelerator.autocast():
            texts = [p.text for p in self.eval_prompts]
            results |= policy_signals(trained, reference, self.tokenizer, texts, completions)
        return {f"eval_{key}": value for key, value in results.items()}

    def evaluate_kept(
        self,
        prompts: list[Prompt],
        completions: list[Completion],
        scores: Scores,
        kept: list[int],
    ) -> dict[str, float]:
        """The held-out test reward of what was trained on, beside its train reward."""
        if self.test_scorer is None:
            return {}
        mine = [kept[i] for i in self.processes.block(len(kept))]  # scored in blocks
        kept_prompts = [prompts[completions[i].prompt_index].prompt for i in mine]
        with fork_all_rng():  # only on evaluation iterations: keep training's streams
            test = self.test_scorer(kept_prompts, [completions[i].text for i in mine])
        test = self.processes.gather_scores(test)
        return {
            "eval_kept_test_reward": run_log.mean_or_nan(test.total),
            "eval_kept_reward": run_log.mean_or_nan([scores.total[i] for i in kept]),
        }

    def _record(
        self,
        metrics: dict[str, Any],
        history: list[dict[str, Any]],
        logger: RunLogger,
        console: Console | None = None,
    ) -> None:
        """Monitor, log and print an iteration's metrics (iteration 0: the start, the monitor's)."""
        iteration = metrics["iteration"]
        if iteration > 0:
            metrics["num_prompts_seen"] = min(
                iteration * self.args.prompts_per_iteration, len(self.prompt_order)
            )
        warning = self.monitor.annotate(metrics)
        if warning:
            self._warn(f"Reward hacking? {warning}.")
            if self.args.stop_on_reward_hacking:
                self.stop_reason = "the reward-hacking monitor (stop_on_reward_hacking)"
        history.append(metrics)
        logger.log_metrics(metrics)
        self.accelerator.log(run_log.tracker_scalars(metrics), step=iteration)
        last = iteration == self.num_iterations
        if console is not None and (iteration % self.args.logging_steps == 0 or last):
            console.print(run_log.format_metrics(metrics, self.num_iterations), soft_wrap=True)

    def save_model(self, output_dir: str | None = None) -> None:
        """The policy (the adapter under LoRA) and tokenizer, loadable with from_pretrained."""
        output_dir = output_dir or self.args.output_dir
        self.accelerator.wait_for_everyone()
        state_dict = self.training_state.whole_model_weights()  # under FSDP: gathered
        if self.accelerator.is_main_process:
            model = self.accelerator.unwrap_model(self.model)
            model.save_pretrained(output_dir, state_dict=state_dict)
            self.tokenizer.save_pretrained(output_dir)

    # --- the run around the loop: prompts, resume, the run folder, checkpoints, signals -----
    def budget_spent(self) -> bool:
        """True once `max_sampled_tokens` completion tokens were sampled for training."""
        budget = self.args.max_sampled_tokens
        return budget is not None and self.num_sampled_tokens >= budget

    def prompts_of_iteration(self, iteration: int) -> list[Prompt]:
        """The `prompts_per_iteration` prompts of an iteration (1-based), in the run's order."""
        size = self.args.prompts_per_iteration
        return [self.prompts[i] for i in self.prompt_order[(iteration - 1) * size :][:size]]

    def _resume(
        self, resume_from_checkpoint: str | bool | None
    ) -> tuple[list[dict], dict[str, int] | None]:
        """(metrics so far, {completions file: its size then}) from a checkpoint, or nothing
        for a new run; the weights, optimizer, scheduler, random state and counters restored."""
        resumed = self.training_state.resume(resume_from_checkpoint, self._warn)
        if resumed is None:
            return [], None
        checkpoint, state = resumed
        self.num_skipped_total = state["num_skipped_total"]
        self.console.print(
            f"Resuming from {checkpoint}: {state['iteration']} of {self.num_iterations} "
            "iterations done."
        )
        return state["history"], resumed_log_sizes(state)

    def _start_run(
        self, history: list[dict[str, Any]], resume_sizes: dict[str, int] | None
    ) -> RunLogger:
        """The monitor (replayed from the metrics so far), trackers, the run folder's files."""
        args = self.args
        self.stop_signal = self.stop_reason = None
        self.num_sampled_tokens = sum(m.get("num_sampled_tokens", 0) for m in history)
        self.monitor = RewardHackingMonitor(args.reward_hacking_window, args.meteor_threshold)
        for metrics in history:  # the monitor is a function of the metrics: replay them
            self.monitor.update(metrics)
        logger = run_log.open_run_log(
            args, self.accelerator, history, resume_sizes, self.eval_prompts
        )
        self.console.print(
            f"SuperHF: {len(self.prompts)} prompts ({self.prompt_stats.num_too_long} too long "
            f"and {self.prompt_stats.num_empty} empty dropped), {self.num_iterations} "
            f"iterations of {args.prompts_per_iteration} prompts x {args.num_generations} "
            f"samples, rewards: {', '.join(self.scorer.names)} -> {args.output_dir}"
        )
        if self.processes.size > 1:
            how = "FSDP2: the policy sharded, each process sampling from a whole copy"
            self.console.print(
                f"{self.processes.size} processes ({how if self.processes.sharded else 'DDP'})."
            )
        if args.sampling_dtype == "auto":
            dtype = str(self.sampling_model.dtype).removeprefix("torch.")
            self.console.print(
                f"Sampling in {dtype} (sampling_dtype auto: "
                f"{native_bf16(self.accelerator.device.type)[1]})."
            )
        return logger

    def _save_due(self, iteration: int) -> bool:
        return (
            iteration % self.args.save_steps == 0
            or iteration == self.num_iterations
            or self.budget_spent()
            or self.stop_reason is not None
        )

    def _save_checkpoint(
        self, iteration: int, history: list[dict[str, Any]], logger: RunLogger
    ) -> Path | None:
        """Everything an exact resume needs (`TrainingState.save`, a collective: every process
        calls this); a failed save warns and leaves older ones intact."""
        try:
            return self.training_state.save(
                iteration, history, logger.sizes, self.num_skipped_total
            )
        except CheckpointError as err:
            self._warn(f"Checkpoint not saved: {err} Training goes on.")
            return None

    def _on_stop_signal(self, signum: int) -> None:
        """SIGINT/SIGTERM during `train`: finish the iteration, save a checkpoint and stop."""
        if self.stop_signal is not None:
            raise KeyboardInterrupt  # a second signal: stop now, the last checkpoint stays
        self.stop_signal = signum
        self.stop_reason = signal.Signals(signum).name
        self._warn(
            f"{signal.Signals(signum).name}: finishing this iteration, then saving a "
            "checkpoint (send it again to stop at once)."
        )

    def _warn(self, message: str) -> None:
        self.console.print(f"[yellow]{message}[/yellow]", soft_wrap=True)
