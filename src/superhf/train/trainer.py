"""SuperHFTrainer: the sample -> score -> filter -> fine-tune loop (docs/METHOD.md, section 2).

    from superhf import SuperHFConfig, SuperHFTrainer
    trainer = SuperHFTrainer(args=SuperHFConfig(max_iterations=20, output_dir="runs/demo"))
    trainer.train()

Each iteration takes `prompts_per_iteration` unused prompts, samples `num_generations`
completions for each, scores them, keeps the best `num_kept_per_prompt` of each prompt, and
makes one pass of minibatch updates on the kept samples with CE + beta * KL. The scheduler
steps once per iteration; nothing carries over between iterations.

Issue 17's options (all off by default; `SuperHFConfig` documents them): `num_train_epochs`
passes over the kept samples, `sample_weighting` and `negative_weight` (weights per sample,
`train/filtering.py`, entering `train/loss.py` as a tensor), `skip_uniform_prompts`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml
from accelerate.utils import set_seed
from datasets import Dataset
from rich.console import Console
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor, distribute_tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from superhf.batching import build_training_batch, encode_prompt
from superhf.config import ConfigError, EvalConfig, SuperHFConfig, check_reward_weights
from superhf.console import make_console, progress_bar
from superhf.data import Prompt, load_prompt_dataset, prepare_prompts
from superhf.errors import TrainingError
from superhf.evaluation.heldout import answer_rows, fork_all_rng, sample_and_score, summarize_eval
from superhf.evaluation.monitor import RewardHackingMonitor
from superhf.evaluation.summary import run_summary
from superhf.files import COMPLETIONS_FILE, CONFIG_FILE, EVAL_COMPLETIONS_FILE, EVAL_PROMPTS_FILE
from superhf.generation import Completion, GenerationStats, generate_completions
from superhf.models import (
    get_peft_model,
    load_model,
    load_tokenizer,
    make_reference,
    prepare_policy,
)
from superhf.rewards.scoring import RewardFunc, RewardScorer, Scores, load_reward_funcs
from superhf.sampling_model import (
    SamplingModel,
    full_tensor,
    native_bf16,
    resolve_sampling_dtype,
)
from superhf.train.checkpoint import (
    CheckpointError,
    find_resume_checkpoint,
    read_rng_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_rng_state,
)
from superhf.train.distributed import (
    OutOfMemoryElsewhere,
    Processes,
    is_out_of_memory,
    make_accelerator,
    prompt_seeds,
)
from superhf.train.filtering import select_training_samples
from superhf.train.loss import superhf_loss
from superhf.train.run_log import (
    RunLogger,
    SilentRunLogger,
    completion_rows,
    format_metrics,
    iteration_metrics,
    mean_or_nan,
    peak_memory_mb,
    tracker_config,
    tracker_scalars,
)
from superhf.train.schedule import iteration_scheduler

RewardSpec = str | RewardFunc
T = TypeVar("T")
_IN_USE = {
    "generation_batch_size": "generation_batch_size",
    "per_device_train_batch_size": "train_micro_batch_size",
}
"""The trainer attribute holding the size in use of each batch-size setting (it shrinks on OOM)."""


class SuperHFTrainer:
    """TRL-shaped trainer: `model`, `reward_funcs`, `args`, `train_dataset`, `processing_class`,
    `peft_config`; then `train()` and `save_model()`.

    Anything not given comes from `args` (a SuperHFConfig): the model from
    `model_name_or_path`, prompts from `dataset_name`, rewards from `reward_funcs`.
    """

    def __init__(
        self,
        model: str | PreTrainedModel | None = None,
        reward_funcs: RewardSpec | Sequence[RewardSpec] | None = None,
        args: SuperHFConfig | None = None,
        train_dataset: Dataset | list[dict[str, Any]] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        peft_config: Any | None = None,
        test_reward_func: RewardSpec | None = None,
        console: Console | None = None,
    ):
        self.args = args = args or SuperHFConfig()
        self.console = console or make_console(stderr=False)
        self.accelerator = make_accelerator(args)
        self.processes = Processes(self.accelerator, args.output_dir)
        if not self.accelerator.is_main_process:
            self.console.quiet = True  # one process speaks; errors still reach stderr
        # Gradient accumulation is done by fine_tune itself (so that it can split minibatches
        # after running out of memory); these shrink on OOM and are saved in checkpoints.
        self.generation_batch_size = args.generation_batch_size
        self.train_micro_batch_size = args.per_device_train_batch_size
        self.num_skipped_total = 0
        self.num_sampled_tokens = 0  # completion tokens sampled for training, whole run
        self.num_oom_retries = 0  # this iteration's
        self.stop_signal: int | None = None  # set by SIGINT/SIGTERM during train()
        self.stop_reason: str | None = None  # why train() returned early, if it did
        model = model if model is not None else args.model_name_or_path
        if isinstance(model, str) and model != args.model_name_or_path:
            self.args = args = dataclasses.replace(args, model_name_or_path=model)

        # Cheap things first, so bad prompts or rewards fail before the model loads.
        if processing_class is None:
            name = model if isinstance(model, str) else model.name_or_path
            processing_class = load_tokenizer(name)
        self.tokenizer = processing_class
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if train_dataset is None:
            train_dataset = load_prompt_dataset(
                args.dataset_name, args.dataset_config, args.dataset_train_split
            )
        self.prompts, self.prompt_stats = prepare_prompts(
            train_dataset,
            self.tokenizer,
            args.max_prompt_length,
            source=args.dataset_name,
            apply_chat_template=args.apply_chat_template,
        )
        self._note_plain_prompts_for_a_chat_model()
        # One shuffle: the last num_eval_prompts are held out for evaluation, never trained on.
        order = list(range(len(self.prompts)))
        random.Random(args.seed).shuffle(order)
        if args.num_eval_prompts >= len(order):
            raise ConfigError(
                f"num_eval_prompts={args.num_eval_prompts} but only {len(order)} usable prompts: "
                "lower num_eval_prompts (0 turns evaluation off)."
            )
        split = len(order) - args.num_eval_prompts
        self.prompt_order = order[:split]
        self.eval_prompts = [self.prompts[i] for i in order[split:]]
        self.num_iterations = len(self.prompt_order) // args.prompts_per_iteration
        if args.max_iterations is not None:
            if args.max_iterations > self.num_iterations:
                self.console.print(
                    f"[yellow]max_iterations={args.max_iterations} needs "
                    f"{args.max_iterations * args.prompts_per_iteration} prompts; only "
                    f"{len(self.prompt_order)} are usable for training, so the run stops after "
                    f"{self.num_iterations} iterations.[/yellow]"
                )
            self.num_iterations = min(self.num_iterations, args.max_iterations)
        if self.num_iterations == 0:
            raise ConfigError(
                f"prompts_per_iteration={args.prompts_per_iteration} but only "
                f"{len(self.prompt_order)} usable training prompts: lower prompts_per_iteration."
            )

        specs = reward_funcs if reward_funcs is not None else args.reward_funcs
        specs = [specs] if isinstance(specs, str) or callable(specs) else list(specs)
        check_reward_weights(args.reward_weights, len(specs))
        funcs, weights = load_reward_funcs(
            specs, args.reward_weights, args.reward_batch_size, str(self.accelerator.device)
        )
        self.scorer = RewardScorer(funcs, weights, args.length_penalty)
        # The held-out scorer only watches: its scores never reach the filter or the loss.
        test_spec = test_reward_func if test_reward_func is not None else args.test_reward_model
        self.test_scorer = None
        if test_spec is not None:
            test_funcs, _ = load_reward_funcs(
                [test_spec], None, args.reward_batch_size, str(self.accelerator.device)
            )
            self.test_scorer = RewardScorer(test_funcs)

        # The model: seeded first so that LoRA's initialisation repeats with the seed.
        set_seed(args.seed)
        if isinstance(model, str):
            model = load_model(model, args.dtype)
        if peft_config is not None:
            policy = get_peft_model(model, peft_config)
        else:
            policy = prepare_policy(model, args)
        self.uses_adapter = hasattr(policy, "disable_adapter")
        reference = None if self.uses_adapter else make_reference(policy, args)
        params = [p for p in policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
        # Not prepared by accelerate: it steps once per iteration, not per optimizer step.
        self.scheduler = iteration_scheduler(
            args.lr_scheduler_type, optimizer, args.warmup_steps, self.num_iterations
        )
        self.model, self.optimizer = self.accelerator.prepare(policy, optimizer)
        sampling_dtype = resolve_sampling_dtype(
            args.sampling_dtype, next(policy.parameters()).dtype, self.accelerator.device.type
        )
        merged_copy = args.merge_adapter_for_sampling and self.uses_adapter
        self.sampling_model = SamplingModel(
            self.accelerator.unwrap_model(self.model),
            sampling_dtype,
            always_copy=self.processes.sharded or merged_copy,
        )
        self.reference = reference.to(self.accelerator.device) if reference is not None else None

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
        with self._stop_signals(), logger, progress_bar(self.console) as progress:
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
        for a new run. A checkpoint from before eval_completions.jsonl was logged lacks its size."""
        resume = self.args.resume_from_checkpoint
        if resume_from_checkpoint is not None:
            resume = (
                self.args.output_dir if resume_from_checkpoint is True else resume_from_checkpoint
            )
        if not resume:
            return [], None
        checkpoint = find_resume_checkpoint(resume, warn=self._warn)
        state = self._load_checkpoint(checkpoint)
        written_by = state.get("num_processes", 1)
        if written_by != self.processes.size:
            raise ConfigError(
                f"{checkpoint} was written by {written_by} processes; this run has "
                f"{self.processes.size}. Resume on {written_by} processes (e.g. accelerate "
                f"launch --num_processes {written_by} or torchrun --nproc_per_node "
                f"{written_by}): each process's random state and the batch sizes in use "
                "belong to that layout."
            )
        if state["prompt_order"] != self.prompt_order:
            raise CheckpointError(
                f"{checkpoint} was written for other prompts: dataset_name, "
                "max_prompt_length and seed must match the run being resumed."
            )
        self.console.print(
            f"Resuming from {checkpoint}: {state['iteration']} of {self.num_iterations} "
            "iterations done."
        )
        sizes = {COMPLETIONS_FILE: state["completions_bytes"]}
        if "eval_completions_bytes" in state:
            sizes[EVAL_COMPLETIONS_FILE] = state["eval_completions_bytes"]
        return state["history"], sizes

    def _start_run(
        self, history: list[dict[str, Any]], resume_sizes: dict[str, int] | None
    ) -> RunLogger:
        """The monitor (replayed from the metrics so far), trackers, the run folder's files."""
        args = self.args
        self.stop_signal = self.stop_reason = None
        self.num_sampled_tokens = sum(m.get("num_sampled_tokens", 0) for m in history)
        self.monitor = RewardHackingMonitor(args.reward_hacking_window, args.meteor_threshold)
        for metrics in history:  # the monitor is a function of the metrics: replay them
            if metrics["iteration"] > 0:
                self.monitor.update(metrics)
        main = self.accelerator.is_main_process
        if main:
            self.accelerator.init_trackers("superhf", config=tracker_config(args))
        # Only the main process writes the run's files (the others hold the same numbers).
        logger_type = RunLogger if main else SilentRunLogger
        logger = logger_type(args.output_dir, history, resume_sizes)
        if self.eval_prompts:
            logger.write_rows(
                EVAL_PROMPTS_FILE,
                [{"prompt": p.prompt, "text": p.text} for p in self.eval_prompts],
            )
        if main:
            with open(Path(args.output_dir) / CONFIG_FILE, "w", encoding="utf-8") as f:
                config = {**args.to_dict(), "resume_from_checkpoint": None}
                yaml.safe_dump(config, f, sort_keys=False)
        self.console.print(
            f"SuperHF: {len(self.prompts)} prompts ({self.prompt_stats.num_too_long} too long "
            f"and {self.prompt_stats.num_empty} empty dropped), {self.num_iterations} "
            f"iterations of {args.prompts_per_iteration} prompts x {args.num_generations} "
            f"samples, rewards: {', '.join(self.scorer.names)} -> {args.output_dir}"
        )
        if self.processes.size > 1:
            how = (
                "FSDP2: the policy sharded, each process sampling from a whole copy"
                if self.processes.sharded
                else "DDP"
            )
            self.console.print(f"{self.processes.size} processes ({how}).")
        if args.sampling_dtype == "auto":
            dtype = str(self.sampling_model.dtype).removeprefix("torch.")
            self.console.print(
                f"Sampling in {dtype} (sampling_dtype auto: "
                f"{native_bf16(self.accelerator.device.type)[1]})."
            )
        return logger

    def _record(
        self,
        metrics: dict[str, Any],
        history: list[dict[str, Any]],
        logger: RunLogger,
        console: Console | None = None,
    ) -> None:
        """Monitor, log and print an iteration's metrics (iteration 0: the starting policy)."""
        iteration = metrics["iteration"]
        if iteration > 0:
            metrics["num_prompts_seen"] = min(
                iteration * self.args.prompts_per_iteration, len(self.prompt_order)
            )
            metrics["reward_hacking"] = warning = self.monitor.update(metrics)
            if warning:
                self._warn(f"Reward hacking? {warning}.")
                if self.args.stop_on_reward_hacking:
                    self.stop_reason = "the reward-hacking monitor (stop_on_reward_hacking)"
        history.append(metrics)
        logger.log_metrics(metrics)
        self.accelerator.log(tracker_scalars(metrics), step=iteration)
        last = iteration == self.num_iterations
        if console is not None and (iteration % self.args.logging_steps == 0 or last):
            console.print(format_metrics(metrics, self.num_iterations), soft_wrap=True)

    def _save_due(self, iteration: int) -> bool:
        return (
            iteration % self.args.save_steps == 0
            or iteration == self.num_iterations
            or self.budget_spent()
            or self.stop_reason is not None
        )

    def _note_plain_prompts_for_a_chat_model(self) -> None:
        """Plain-string prompts reach a chat model as they are: say so once, with the fix."""
        if self.args.apply_chat_template or self.tokenizer.chat_template is None:
            return
        plain = sum(isinstance(p.prompt, str) and p.text == p.prompt for p in self.prompts)
        if plain:
            self._warn(
                f"{plain} prompts are plain strings, used as they are although the model has a "
                "chat template: an instruct model may continue them instead of answering. "
                "--apply_chat_template renders them as user messages."
            )

    def _warn(self, message: str) -> None:
        self.console.print(f"[yellow]{message}[/yellow]", soft_wrap=True)

    @contextlib.contextmanager
    def _stop_signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM set `stop_signal`; the loop saves and stops after the iteration."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.stop_signal is not None:
                raise KeyboardInterrupt  # a second signal: stop now, the last checkpoint stays
            self.stop_signal = signum
            self.stop_reason = signal.Signals(signum).name
            self._warn(
                f"{signal.Signals(signum).name}: finishing this iteration, then saving a "
                "checkpoint (send it again to stop at once)."
            )

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    # --- checkpoints ----------------------------------------------------------------------------
    def _trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        model = self.accelerator.unwrap_model(self.model)
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def _whole_trainable_weights(self) -> dict[str, torch.Tensor]:
        """The trainable weights on the CPU, whole (under FSDP: gathered, a collective)."""
        return {
            n: full_tensor(p.detach()).cpu().contiguous()
            for n, p in self._trainable_parameters().items()
        }

    def _save_checkpoint(
        self, iteration: int, history: list[dict[str, Any]], logger: RunLogger
    ) -> Path | None:
        """Everything an exact resume needs; a failed save warns and leaves older ones intact.

        Written by the main process alone, with every process's random state (a collective:
        every process calls this)."""
        rng_states = self.processes.all_ranks(rng_state())
        # Collectives under FSDP (the whole weights and optimizer state), so on every process.
        tensors = self._whole_trainable_weights()
        optimizer_state = self._optimizer_state()
        if not self.accelerator.is_main_process:
            self.processes.barrier("waiting for the checkpoint")
            return None
        state = {
            "iteration": iteration,
            "num_iterations": self.num_iterations,
            "prompt_order": self.prompt_order,
            "history": history,
            "completions_bytes": logger.sizes[COMPLETIONS_FILE],
            "eval_completions_bytes": logger.sizes[EVAL_COMPLETIONS_FILE],
            "num_skipped_total": self.num_skipped_total,
            "generation_batch_size": self.generation_batch_size,
            "train_micro_batch_size": self.train_micro_batch_size,
            "num_processes": self.processes.size,
            "sharded": self.processes.sharded,
        }

        def write(folder: Path) -> None:
            save_file(tensors, folder / "trainable.safetensors")
            if self.uses_adapter:  # small, and loadable by `superhf eval` and peft
                model = self.accelerator.unwrap_model(self.model)
                whole = tensors if self.processes.sharded else None  # not its own shards
                model.save_pretrained(folder, state_dict=whole)
            torch.save(optimizer_state, folder / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), folder / "scheduler.pt")
            for rank, rng in enumerate(rng_states):  # JSON + safetensors: loading runs no code
                write_rng_state(folder, rng, rank)
            (folder / "trainer_state.json").write_text(json.dumps(state), encoding="utf-8")

        try:
            return save_checkpoint(
                self.args.output_dir, iteration, write, self.args.save_total_limit
            )
        except CheckpointError as err:
            self._warn(f"Checkpoint not saved: {err} Training goes on.")
            return None
        finally:
            self.processes.barrier("waiting for the checkpoint")

    def _optimizer_state(self) -> dict[str, Any]:
        """The optimizer's state to save: its own state_dict, or under FSDP the whole state
        keyed by parameter name (gathered to the main process: a collective)."""
        if not self.processes.sharded:
            return self.optimizer.state_dict()
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(self.model, self.optimizer, options=options)

    def _load_checkpoint(self, folder: Path) -> dict[str, Any]:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        if state.get("sharded", False) != self.processes.sharded:
            engines = {False: "without FSDP", True: "with FSDP"}
            raise ConfigError(
                f"{folder} was written by a run {engines[state.get('sharded', False)]}; this "
                f"run is {engines[self.processes.sharded]}. Resume with the accelerate config "
                "that started the run."
            )
        tensors = load_file(folder / "trainable.safetensors")
        params = self._trainable_parameters()
        if set(tensors) != set(params):
            raise CheckpointError(
                f"{folder} holds other trainable weights than this model: model_name_or_path, "
                "use_peft and the lora_* settings must match the run being resumed."
            )
        with torch.no_grad():
            for name, param in params.items():
                value = tensors[name].to(param.device)
                if isinstance(param, DTensor):  # this process's shard of the whole tensor
                    value = distribute_tensor(value, param.device_mesh, param.placements)
                param.copy_(value)
        optimizer_state = torch.load(folder / "optimizer.pt", weights_only=True)
        if self.processes.sharded:
            options = StateDictOptions(full_state_dict=True)
            set_optimizer_state_dict(self.model, self.optimizer, optimizer_state, options=options)
        else:
            self.optimizer.load_state_dict(optimizer_state)
        self.scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
        set_rng_state(read_rng_state(folder, self.processes.rank))
        self.num_skipped_total = state["num_skipped_total"]
        self.generation_batch_size = state["generation_batch_size"]
        self.train_micro_batch_size = state["train_micro_batch_size"]
        return state

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
        self.num_oom_retries = 0
        times = [time.perf_counter()]
        status("generating")
        block = self.processes.block(len(prompts))
        mine = [prompts[i] for i in block]
        seeds = prompt_seeds(args.seed, iteration, block.start, len(mine))
        # The policy's weights now (after updates, a resume); once, outside the out-of-memory
        # retries: under FSDP a refresh is a collective, and a retry may run on one process.
        self.sampling_model.refresh()
        completions, generation = self._with_oom_backoff(
            "generation_batch_size", lambda size: self.sample(mine, size, seeds)
        )
        self.generation_batch_size = self.processes.min(self.generation_batch_size)  # agreed
        times.append(time.perf_counter())
        status("scoring")
        scores = self.processes.gather_scores(self.score(mine, completions))
        gathered = self.processes.gather_samples(block.start, completions, generation)
        completions, generation = gathered
        self.num_sampled_tokens += generation.num_sampled_tokens  # every process's
        selection = select_training_samples(
            scores.total,
            [c.prompt_index for c in completions],
            args.num_kept_per_prompt,
            args.sample_weighting,
            args.negative_weight,
            args.skip_uniform_prompts,
        )
        kept = selection.kept
        times.append(time.perf_counter())
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
        eval_metrics = {}
        last = iteration == self.num_iterations or self.budget_spent()
        if iteration % args.eval_steps == 0 or last:
            status("evaluating")
            eval_metrics = self.evaluate(iteration, logger) if self.eval_prompts else {}
            eval_metrics |= self.evaluate_kept(prompts, completions, scores, kept)
        times.append(time.perf_counter())

        metrics = iteration_metrics(
            iteration, completions, generation, scores, kept, train_metrics, times
        )
        metrics |= {
            "learning_rate": learning_rate,
            "num_skipped_minibatches_total": self.num_skipped_total,
            "num_oom_retries": self.processes.max(self.num_oom_retries),  # sampling + tuning
            "generation_batch_size": self.generation_batch_size,
            "train_micro_batch_size": self.train_micro_batch_size,
            "num_sampled_tokens": generation.num_sampled_tokens,
            "num_sampled_tokens_total": self.num_sampled_tokens,
            "peak_memory_mb": peak_memory_mb(),
            **eval_metrics,
        }
        if logger is not None and args.log_completions:
            logger.log_completions(
                completion_rows(
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
            return generate_completions(
                self.sampling_model.model,
                self.tokenizer,
                [p.text for p in prompts],
                self.args,
                batch_size,
                seeds,
            )

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
            "eval_kept_test_reward": mean_or_nan(test.total),
            "eval_kept_reward": mean_or_nan([scores.total[i] for i in kept]),
        }

    def evaluate(self, iteration: int = 0, logger: RunLogger | None = None) -> dict[str, float]:
        """The held-out prompts, answered with the paper's eval sampling, scored, compared.

        Its random stream is its own (forked and seeded), so evaluating never changes training.
        On many processes each answers and scores its block of the prompts; all are gathered.
        With a `logger` (and `log_completions`), the answers go to eval_completions.jsonl
        under `iteration`.
        """
        policy = self.accelerator.unwrap_model(self.model)
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
        return {f"eval_{key}": value for key, value in results.items()}

    def fine_tune(
        self,
        samples: list[Completion],
        prompts: list[Prompt],
        weights: list[float] | None = None,
        shuffle_seed: str = "",
    ) -> dict[str, float]:
        """`num_train_epochs` passes over the samples: an optimizer step per
        `gradient_accumulation_steps` minibatches. The first pass takes the samples in their
        order; each later one shuffles them with `random.Random(f"{shuffle_seed}:{epoch}")`
        (its own stream: the run's random state is untouched). A step with a non-finite loss
        or gradient is skipped (its minibatches counted); running out of memory halves the
        micro-batch and redoes the step.

        `weights`: one per sample (`Selection.weights`), passed to the loss; None: plain CE.

        Each sample trains on its prompt's ids as generation saw them (`encode_prompt`) and
        the ids it sampled (`Completion.token_ids`), through the token that ended it; a
        clipped one gets no end token, or is left out with `mask_truncated_completions`.
        """
        args = self.args
        self.model.train()
        num_kept = len(samples)
        rows = list(zip(samples, weights or [None] * len(samples), strict=True))
        if args.mask_truncated_completions:
            rows = [(s, w) for s, w in rows if not s.clipped]
        prompt_ids = {i: encode_prompt(self.tokenizer, p.text) for i, p in enumerate(prompts)}
        encoded = [(prompt_ids[s.prompt_index], s.training_ids(self.tokenizer), w) for s, w in rows]
        # Each pass: this process's slice of each global minibatch (per_device x processes rows).
        minibatches = []
        for epoch in range(args.num_train_epochs):
            order = list(encoded)
            if epoch > 0:
                random.Random(f"{shuffle_seed}:{epoch}").shuffle(order)
            minibatches += self.processes.minibatches(
                order, args.per_device_train_batch_size, _token_counts
            )
        accumulation = args.gradient_accumulation_steps
        totals: dict[str, list[float]] = {key: [] for key in _LOSS_STATS}
        grad_norms: list[float] = []
        skipped, retries_before = 0, self.num_oom_retries
        for start in range(0, len(minibatches), accumulation):
            group = minibatches[start : start + accumulation]
            stats, norm = self._with_oom_backoff(
                "per_device_train_batch_size", lambda micro, g=group: self._optimizer_step(g, micro)
            )
            if norm is None:
                skipped += len(group)
                continue
            grad_norms.append(norm)
            for minibatch_stats in stats:
                for key, value in minibatch_stats.items():
                    if not math.isnan(value):  # a KL not measured (no reference, no CE row)
                        totals[key].append(value)
        metrics = {key: mean_or_nan(values) for key, values in totals.items()}
        metrics["grad_norm"] = mean_or_nan(grad_norms)
        metrics["num_skipped_minibatches"] = skipped
        metrics["num_masked_truncated"] = num_kept - len(rows)  # clipped, left out of the loss
        metrics["num_oom_retries"] = self.num_oom_retries - retries_before
        self.num_skipped_total += skipped
        return metrics

    def _optimizer_step(
        self,
        group: list[tuple[list[Row], tuple[int, int, int], int]],
        micro: int,
    ) -> tuple[list[dict[str, float]], float | None]:
        """Accumulate the gradients of `group`'s minibatches, then step; the grad norm, or None
        if the step was skipped as non-finite.

        Rows are (prompt ids, completion ids, weight or None); each minibatch is (this
        process's rows, the whole minibatch's `_token_counts`, its number of rows)
        (`Processes.minibatches`) and may be split into micro-batches of `micro` sequences;
        their losses are weighted so that the gradient equals the whole minibatch's: the
        token-mean CE by the micro-batch's share of the minibatch's CE tokens, the
        unlikelihood by its share of the negative rows' tokens, the KL (a sum over examples)
        as is. On many processes the loss is multiplied by their number (DDP averages);
        out-of-memory and non-finite losses are agreed before DDP syncs. Under FSDP every
        forward and backward is a collective: a process with fewer pieces runs idle ones
        (`_idle_pass`) until all have run as many, a non-finite piece still runs its backward
        (the step is then skipped on all), and out of memory cannot be agreed mid-step, so it
        stops the run with an error naming the fix.
        """
        acc, processes = self.accelerator, self.processes
        self.optimizer.zero_grad()
        pieces = [
            (m, mb[i : i + micro])
            for m, (mb, _, _) in enumerate(group)
            for i in range(0, len(mb), micro)
        ]
        if processes.sharded:
            pieces += [(-1, [])] * (processes.max(len(pieces)) - len(pieces))
        keys = tuple(k for k in _LOSS_STATS if k != "loss")
        stats = [dict.fromkeys(keys, 0.0) for _ in group]
        out_of_memory = non_finite = False
        for j, (m, piece) in enumerate(pieces):
            if not piece:
                self._idle_pass()
                continue
            _, tokens, count = group[m]
            batch = build_training_batch(
                [p for p, _, _ in piece], [c for _, c, _ in piece], self.tokenizer
            ).to(acc.device)
            weights = None if piece[0][2] is None else torch.tensor([w for _, _, w in piece])
            keep = batch.logits_to_keep()
            # One process: DDP-free, the last piece is the step's. Many: every piece under
            # no_sync; the gradients are averaged after the processes agree (below).
            sync = j == len(pieces) - 1 and processes.size == 1
            ce_total, negative_total, toward_total = group[m][1]
            scale = processes.size / len(group)
            ce_tokens, negative_tokens, toward = _token_counts(piece)
            try:
                with contextlib.nullcontext() if sync else acc.no_sync(self.model), acc.autocast():
                    logits = self.model(**batch.model_inputs(), logits_to_keep=keep).logits
                    ref_logits = self.reference_logits(batch, keep)
                    out = superhf_loss(
                        logits, batch.labels[:, -keep:], ref_logits, self.args.beta, weights
                    )
                    weight = ce_tokens / ce_total if ce_total else 0.0
                    loss = (out.sft_loss * weight + out.kl_loss) * scale
                    weight_negative = negative_tokens / negative_total if negative_total else 0.0
                    if negative_tokens:
                        loss = loss + out.unlikelihood_loss * weight_negative * scale
                    if not torch.isfinite(loss):
                        non_finite = True
                        if not processes.sharded:
                            break
                    acc.backward(loss)
            except RuntimeError as err:
                if processes.size == 1 or not is_out_of_memory(err):
                    raise
                if processes.sharded:
                    raise TrainingError(
                        f"out of memory on process {processes.rank} while fine-tuning under "
                        "FSDP, where the processes cannot agree to halve the micro-batch in "
                        "the middle of a step. Lower per_device_train_batch_size (or "
                        "max_completion_length) and continue with: superhf train --resume "
                        f"{self.args.output_dir}"
                    ) from err
                out_of_memory = True  # agreed below, so that every process backs off
                break
            stats[m]["loss/sft"] += float(out.sft_loss.detach()) * weight
            stats[m]["loss/kl"] += float(out.kl_loss.detach())
            if negative_tokens:
                unlikelihood = float(out.unlikelihood_loss.detach())
                stats[m]["loss/unlikelihood"] += unlikelihood * weight_negative
            # the KL is measured on the rows trained toward: each piece's share of them
            if toward:
                stats[m]["kl"] += float(out.kl) * toward / toward_total
        flat = [s[k] for s in stats for k in keys]
        out_of_memory, non_finite, *flat = processes.sum([out_of_memory, non_finite, *flat])
        if out_of_memory:
            self.optimizer.zero_grad()
            raise OutOfMemoryElsewhere(f"out of memory on {int(out_of_memory)} process(es)")
        if non_finite:
            self.optimizer.zero_grad()
            return [], None
        processes.sync_gradients(self.model, self.tokenizer.pad_token_id)
        n = len(keys)
        stats = [dict(zip(keys, flat[i : i + n], strict=True)) for i in range(0, len(flat), n)]
        for s, (_, (_, _, toward_total), _) in zip(stats, group, strict=True):
            if not toward_total:
                s["kl"] = float("nan")  # nothing to measure it on
        for s in stats:
            s["loss"] = s["loss/sft"] + s["loss/kl"] + s["loss/unlikelihood"]
        norm = acc.clip_grad_norm_(self.model.parameters(), float("inf"))
        if norm is not None and not torch.isfinite(norm):
            self.optimizer.zero_grad()
            return [], None
        self.optimizer.step()
        self.optimizer.zero_grad()
        return stats, float(norm) if norm is not None else float("nan")

    def _with_oom_backoff(self, setting: str, run: Callable[[int], T]) -> T:
        """`run(batch size in use)`, halving that size and retrying after running out of memory.

        `setting` names the config field whose value in use halves (`generation_batch_size`
        or `per_device_train_batch_size`); the size in use is saved in checkpoints. Anything
        but out-of-memory is raised as it is; so is out-of-memory at size 1.
        """
        attribute = _IN_USE[setting]
        while True:
            size = getattr(self, attribute)
            try:
                return run(size)
            except RuntimeError as err:
                if not is_out_of_memory(err):
                    raise
                self.optimizer.zero_grad()
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if size <= 1:
                    raise TrainingError(
                        f"out of memory even with one sequence per batch ({setting}): lower "
                        "max_completion_length or max_prompt_length, use bf16, or a smaller model."
                    ) from err
                self._warn(
                    f"Out of memory: {setting} in use halved from {size} to {size // 2}; retrying."
                )
                setattr(self, attribute, size // 2)
                self.num_oom_retries += 1

    def _idle_pass(self) -> None:
        """Under FSDP, what a piece's passes are with nothing to train on: the policy's and
        the reference's forward on one token and a backward of zero, so that this process
        takes part in the others' collectives and adds nothing to any gradient."""
        acc, pad = self.accelerator, self.tokenizer.pad_token_id
        batch = build_training_batch([[pad]], [[pad]], self.tokenizer).to(acc.device)
        with acc.autocast():
            logits = self.model(**batch.model_inputs(), logits_to_keep=1).logits
            self.reference_logits(batch, 1)
        acc.backward(logits.float().sum() * 0.0)

    @torch.no_grad()
    def reference_logits(self, batch, keep: int) -> torch.Tensor | None:
        """Logits of the KL reference: the adapter-disabled policy, or the frozen copy.

        It runs even when beta = 0, so the KL is still logged: free under LoRA; with full
        fine-tuning the copy exists at beta 0 unless `log_kl_without_beta` is off.
        """
        if self.uses_adapter:
            policy = self.accelerator.unwrap_model(self.model)
            with policy.disable_adapter():
                return self.model(**batch.model_inputs(), logits_to_keep=keep).logits
        if self.reference is not None:
            return self.reference(**batch.model_inputs(), logits_to_keep=keep).logits
        return None

    def save_model(self, output_dir: str | None = None) -> None:
        """The policy (the adapter under LoRA) and tokenizer, loadable with from_pretrained."""
        output_dir = output_dir or self.args.output_dir
        self.accelerator.wait_for_everyone()
        state_dict = None
        model = self.accelerator.unwrap_model(self.model)
        if self.processes.sharded and self.uses_adapter:  # the adapter's weights, whole
            state_dict = self._whole_trainable_weights()
        elif self.processes.sharded:  # the whole model, gathered to the main process
            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            state_dict = get_model_state_dict(self.model, options=options)
            # A tied weight is gathered once per name: keep the one name save_pretrained keeps.
            names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
            state_dict = {n: t for n, t in state_dict.items() if n in names}
        if self.accelerator.is_main_process:
            model.save_pretrained(output_dir, state_dict=state_dict)
            self.tokenizer.save_pretrained(output_dir)


_LOSS_STATS = ("loss", "loss/sft", "loss/kl", "loss/unlikelihood", "kl")
"""What each minibatch logs (averaged over the iteration's minibatches)."""


Row = tuple[list[int], list[int], float | None]
"""(prompt ids, completion ids, weight or None) of one training row."""


def _token_counts(rows: Sequence[Row]) -> tuple[int, int, int]:
    """Labelled completion tokens of the rows trained toward (weight None or > 0), of the rows
    pushed down (weight < 0), and the number of rows trained toward."""
    ce = sum(len(c) for _, c, w in rows if w is None or w > 0)
    negative = sum(len(c) for _, c, w in rows if w is not None and w < 0)
    return ce, negative, sum(w is None or w > 0 for _, _, w in rows)
