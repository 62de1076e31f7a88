"""SuperHFTrainer: the generate -> score -> filter -> fine-tune loop (SUPERHF.md, section 2).

    from superhf import SuperHFConfig, SuperHFTrainer
    trainer = SuperHFTrainer(args=SuperHFConfig(max_iterations=20, output_dir="runs/demo"))
    trainer.train()

Each iteration takes `prompts_per_iteration` unused prompts, samples `num_generations`
completions for each, scores them, keeps the best `num_kept_per_prompt` of each prompt, and
makes one pass of minibatch updates on the kept samples with CE + beta * KL. The scheduler
steps once per iteration; nothing carries over between iterations.
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import Dataset
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_scheduler

from superhf.config import ConfigError, SuperHFConfig
from superhf.data import Prompt, load_prompt_dataset, prepare_prompts
from superhf.filtering import top_k_per_prompt
from superhf.generation import Completion, generate_completions
from superhf.loss import build_training_batch, superhf_loss
from superhf.models import load_model, load_tokenizer, make_reference, prepare_policy
from superhf.reporting import RunLogger, format_metrics
from superhf.rewards import RewardFunc, RewardScorer, load_reward_funcs

RewardSpec = str | RewardFunc


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


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
        self.console = console or Console()
        self.accelerator = Accelerator(
            mixed_precision="bf16" if args.bf16 else "no",
            log_with=args.report_to or None,
            project_dir=args.output_dir,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
        )
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
            train_dataset, self.tokenizer, args.max_prompt_length, source=args.dataset_name
        )
        self.num_iterations = len(self.prompts) // args.prompts_per_iteration
        if args.max_iterations is not None:
            if args.max_iterations > self.num_iterations:
                self.console.print(
                    f"[yellow]max_iterations={args.max_iterations} needs "
                    f"{args.max_iterations * args.prompts_per_iteration} prompts; only "
                    f"{len(self.prompts)} are usable, so the run stops after "
                    f"{self.num_iterations} iterations.[/yellow]"
                )
            self.num_iterations = min(self.num_iterations, args.max_iterations)
        if self.num_iterations == 0:
            raise ConfigError(
                f"prompts_per_iteration={args.prompts_per_iteration} but only "
                f"{len(self.prompts)} usable prompts: lower prompts_per_iteration."
            )

        specs = reward_funcs if reward_funcs is not None else args.reward_funcs
        specs = [specs] if isinstance(specs, str) or callable(specs) else list(specs)
        if args.reward_weights is not None and len(args.reward_weights) != len(specs):
            raise ConfigError(
                f"reward_weights has {len(args.reward_weights)} values for {len(specs)} "
                "reward functions: give one weight per reward function."
            )
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
            from peft import get_peft_model

            policy = get_peft_model(model, peft_config)
        else:
            policy = prepare_policy(model, args)
        self.uses_adapter = hasattr(policy, "disable_adapter")
        reference = None if self.uses_adapter else make_reference(policy, args)
        params = [p for p in policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
        # Not prepared by accelerate: it steps once per iteration, not per optimizer step.
        self.scheduler = get_scheduler(
            args.lr_scheduler_type, optimizer, args.warmup_steps, self.num_iterations
        )
        self.model, self.optimizer = self.accelerator.prepare(policy, optimizer)
        self.reference = reference.to(self.accelerator.device) if reference is not None else None

    # ------------------------------------------------------------------------------------------
    def train(self) -> list[dict[str, Any]]:
        """Run every iteration; returns the logged metrics (also in output_dir/metrics.jsonl)."""
        args = self.args
        order = list(range(len(self.prompts)))
        random.Random(args.seed).shuffle(order)
        if self.accelerator.is_main_process:
            self.accelerator.init_trackers("superhf", config=_flat_config(args))
        logger = RunLogger(args.output_dir)
        with open(f"{args.output_dir}/config.yaml", "w", encoding="utf-8") as f:
            yaml.safe_dump(args.to_dict(), f, sort_keys=False)
        self.console.print(
            f"SuperHF: {len(self.prompts)} prompts ({self.prompt_stats.num_too_long} too long "
            f"and {self.prompt_stats.num_empty} empty dropped), {self.num_iterations} "
            f"iterations of {args.prompts_per_iteration} prompts x {args.num_generations} "
            f"samples, rewards: {', '.join(self.scorer.names)} -> {args.output_dir}"
        )
        history: list[dict[str, Any]] = []
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        with progress:
            task = progress.add_task("iterations", total=self.num_iterations)
            for iteration in range(1, self.num_iterations + 1):
                start = (iteration - 1) * args.prompts_per_iteration
                batch = [self.prompts[i] for i in order[start : start + args.prompts_per_iteration]]
                metrics = self.step(
                    batch,
                    iteration,
                    logger,
                    status=lambda s, i=iteration: progress.update(
                        task, description=f"iteration {i}: {s}"
                    ),
                )
                metrics["num_prompts_seen"] = start + len(batch)
                history.append(metrics)
                logger.log_metrics(metrics)
                self.accelerator.log(_numeric(metrics), step=iteration)
                if iteration % args.logging_steps == 0 or iteration == self.num_iterations:
                    progress.console.print(
                        format_metrics(metrics, self.num_iterations), soft_wrap=True
                    )
                progress.update(task, advance=1, description="iterations")
        logger.close()
        if len(history) >= 2:
            k = max(1, len(history) // 4)
            first, last = (
                _mean([m["reward"] for m in part]) for part in (history[:k], history[-k:])
            )
            self.console.print(
                f"Mean reward: first {k} iterations {first:+.3f}, last {k} {last:+.3f}. "
                "Each iteration has new prompts, so compare runs on the same seed."
            )
        self.save_model()
        self.accelerator.end_training()
        return history

    def step(
        self,
        prompts: list[Prompt],
        iteration: int,
        logger: RunLogger | None = None,
        status: Callable[[str], None] = lambda _: None,
    ) -> dict[str, Any]:
        """One generate -> score -> filter -> fine-tune iteration on `prompts`."""
        args = self.args
        t0 = time.perf_counter()
        status("generating")
        policy = self.accelerator.unwrap_model(self.model)
        with self.accelerator.autocast():
            completions, gen = generate_completions(
                policy, self.tokenizer, [p.text for p in prompts], args
            )
        t1 = time.perf_counter()
        status("scoring")
        sample_prompts = [prompts[c.prompt_index] for c in completions]
        columns = {
            key: [p.columns.get(key) for p in sample_prompts]
            for key in (sample_prompts[0].columns if sample_prompts else {})
        }
        scores = self.scorer(
            [p.prompt for p in sample_prompts], [c.text for c in completions], columns
        )
        kept = top_k_per_prompt(
            scores.total, [c.prompt_index for c in completions], args.num_kept_per_prompt
        )
        t2 = time.perf_counter()
        status("fine-tuning")
        train_metrics = self.fine_tune([completions[i] for i in kept], prompts)
        self.scheduler.step()
        t3 = time.perf_counter()

        rewards = scores.total
        if self.test_scorer is not None and iteration % args.eval_steps == 0:
            kept_prompts = [sample_prompts[i].prompt for i in kept]
            test = self.test_scorer(kept_prompts, [completions[i].text for i in kept])
            eval_metrics = {
                "eval_test_reward": _mean(test.total),
                "eval_train_reward": _mean([rewards[i] for i in kept]),
            }
        else:
            eval_metrics = {}
        lengths = [c.num_tokens for c in completions]
        metrics: dict[str, Any] = {
            "iteration": iteration,
            "reward": _mean(rewards),
            "reward_std": statistics.pstdev(rewards) if rewards else float("nan"),
            "reward_max": max(rewards, default=float("nan")),
            "reward_min": min(rewards, default=float("nan")),
            "reward_kept": _mean([rewards[i] for i in kept]),
            **{f"rewards/{name}/mean": _mean(v) for name, v in scores.per_func.items()},
            **train_metrics,
            "learning_rate": self.optimizer.param_groups[0]["lr"],
            "completions/mean_length": _mean(lengths),
            "completions/min_length": min(lengths, default=0),
            "completions/max_length": max(lengths, default=0),
            "completions/clipped_ratio": _mean([float(c.clipped) for c in completions]),
            "completions/num_empty": gen.num_empty,
            "num_completions": len(completions),
            "num_kept": len(kept),
            "tokens_per_second": gen.num_sampled_tokens / gen.seconds if gen.seconds else 0.0,
            "time/generate": t1 - t0,
            "time/score": t2 - t1,
            "time/fine_tune": t3 - t2,
            "step_time": t3 - t0,
            **eval_metrics,
        }
        if logger is not None and args.log_completions:
            logger.log_completions(
                [
                    {
                        "iteration": iteration,
                        "prompt": prompts[completions[i].prompt_index].prompt,
                        "completion": completions[i].text,
                        "reward": rewards[i],
                        **{f"rewards/{n}": v[i] for n, v in scores.per_func.items()},
                    }
                    for i in kept
                ]
            )
        return metrics

    def fine_tune(self, samples: list[Completion], prompts: list[Prompt]) -> dict[str, float]:
        """One pass over the kept samples in minibatches; non-finite minibatches are skipped."""
        args, acc = self.args, self.accelerator
        self.model.train()
        tokenize = self.tokenizer
        prompt_ids = {
            i: tokenize(p.text, add_special_tokens=False)["input_ids"]
            for i, p in enumerate(prompts)
        }
        totals: dict[str, list[float]] = {"loss": [], "loss/sft": [], "loss/kl": [], "kl": []}
        grad_norms: list[float] = []
        skipped = 0
        size = args.per_device_train_batch_size
        for start in range(0, len(samples), size):
            chunk = samples[start : start + size]
            batch = build_training_batch(
                [prompt_ids[s.prompt_index] for s in chunk],
                [tokenize(s.text, add_special_tokens=False)["input_ids"] for s in chunk],
                self.tokenizer,
            ).to(acc.device)
            keep = batch.logits_to_keep()
            labels = batch.labels[:, -keep:]
            with acc.accumulate(self.model), acc.autocast():
                logits = self.model(**batch.model_inputs(), logits_to_keep=keep).logits
                ref_logits = self.reference_logits(batch, keep)
                out = superhf_loss(logits, labels, ref_logits, args.beta)
                if not torch.isfinite(out.loss):
                    skipped += 1
                    self.optimizer.zero_grad()
                    continue
                acc.backward(out.loss)
                if acc.sync_gradients:
                    norm = acc.clip_grad_norm_(self.model.parameters(), float("inf"))
                    if norm is not None and not torch.isfinite(norm):
                        skipped += 1
                        self.optimizer.zero_grad()
                        continue
                    if norm is not None:
                        grad_norms.append(float(norm))
                self.optimizer.step()
                self.optimizer.zero_grad()
            for key, value in (
                ("loss", out.loss),
                ("loss/sft", out.sft_loss),
                ("loss/kl", out.kl_loss),
                ("kl", out.kl),
            ):
                totals[key].append(float(value.detach()))
        metrics = {key: _mean(values) for key, values in totals.items()}
        metrics["grad_norm"] = _mean(grad_norms)
        metrics["num_skipped_minibatches"] = skipped
        return metrics

    @torch.no_grad()
    def reference_logits(self, batch, keep: int) -> torch.Tensor | None:
        """Logits of the KL reference: the adapter-disabled policy, or the frozen copy.

        Under LoRA this runs even when beta = 0, so the KL is still logged at no memory cost.
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
        if self.accelerator.is_main_process:
            model = self.accelerator.unwrap_model(self.model)
            model.save_pretrained(output_dir)
            self.tokenizer.save_pretrained(output_dir)


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and math.isfinite(float(v))
    }


def _flat_config(args: SuperHFConfig) -> dict[str, Any]:
    """Tracker-friendly hyperparameters (TensorBoard takes scalars and strings only)."""
    items = args.to_dict().items()
    return {k: (str(v) if isinstance(v, list) else v) for k, v in items if v is not None}
