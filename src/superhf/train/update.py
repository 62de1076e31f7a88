"""The policy update: optimizer steps on the kept samples with CE + beta * KL (docs/METHOD.md).

`PolicyUpdate.fine_tune` turns the kept samples into minibatches of (prompt ids, sampled ids,
weight) rows and makes an optimizer step per `gradient_accumulation_steps` of them.
Each step (`PolicyUpdate.optimizer_step`) splits its minibatches into micro-batches whose
weighted losses add up to the whole minibatch's gradient, runs FSDP's idle passes, agrees on
out-of-memory across processes and skips a non-finite step. `OutOfMemoryBackoff` holds the
batch sizes in use (sampling's and fine-tuning's) and halves them after running out of memory.
"""

from __future__ import annotations

import contextlib
import gc
import math
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from superhf.batching import TrainingBatch, build_training_batch, encode_prompt
from superhf.errors import TrainingError
from superhf.train.distributed import OutOfMemoryElsewhere, Processes, is_out_of_memory
from superhf.train.loss import superhf_loss
from superhf.train.run_log import mean_or_nan

if TYPE_CHECKING:
    from accelerate import Accelerator
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from superhf.config import SuperHFConfig
    from superhf.data import Prompt
    from superhf.generation import Completion

T = TypeVar("T")

LOSS_STATS = ("loss", "loss/sft", "loss/kl", "loss/unlikelihood", "kl")
"""What each minibatch logs (averaged over the iteration's minibatches)."""

Row = tuple[list[int], list[int], float | None]
"""(prompt ids, completion ids, weight or None) of one training row."""

Minibatch = tuple[list[Row], tuple[int, int, int], int]
"""This process's rows of a minibatch, the whole minibatch's `token_counts`, its number of rows
(`Processes.minibatches`)."""

_IN_USE = {
    "generation_batch_size": "generation_batch_size",
    "per_device_train_batch_size": "train_micro_batch_size",
}
"""The attribute holding the size in use of each batch-size setting (it shrinks on OOM)."""


def token_counts(rows: Sequence[Row]) -> tuple[int, int, int]:
    """Labelled completion tokens of the rows trained toward (weight None or > 0), of the rows
    pushed down (weight < 0), and the number of rows trained toward."""
    ce = sum(len(c) for _, c, w in rows if w is None or w > 0)
    negative = sum(len(c) for _, c, w in rows if w is not None and w < 0)
    return ce, negative, sum(w is None or w > 0 for _, _, w in rows)


class OutOfMemoryBackoff:
    """The batch sizes in use, which start at the settings and halve after running out of
    memory (checkpoints save them), and the number of retries (the trainer zeroes it each
    iteration)."""

    def __init__(
        self,
        args: SuperHFConfig,
        optimizer: torch.optim.Optimizer,
        warn: Callable[[str], None],
    ):
        # Gradient accumulation is done by PolicyUpdate itself (so that it can split
        # minibatches after running out of memory).
        self.generation_batch_size = args.generation_batch_size
        self.train_micro_batch_size = args.per_device_train_batch_size
        self.num_retries = 0
        self.optimizer = optimizer
        self.warn = warn

    def run(self, setting: str, run: Callable[[int], T]) -> T:
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
                self.warn(
                    f"Out of memory: {setting} in use halved from {size} to {size // 2}; retrying."
                )
                setattr(self, attribute, size // 2)
                self.num_retries += 1


class PolicyUpdate:
    """The policy's optimizer steps with CE + beta * KL, and the KL reference's logits.

    It prepares `policy` and `optimizer` with accelerate (`model` and `optimizer` then) and
    puts `reference`, the frozen copy, on the device (None under LoRA, whose reference is the
    adapter-disabled policy, or without a KL). `backoff` holds the batch sizes in use; `warn`
    hears when one halves."""

    def __init__(
        self,
        accelerator: Accelerator,
        processes: Processes,
        policy: PreTrainedModel,
        optimizer: torch.optim.Optimizer,
        reference: PreTrainedModel | None,
        tokenizer: PreTrainedTokenizerBase,
        args: SuperHFConfig,
        warn: Callable[[str], None],
    ):
        self.accelerator, self.processes = accelerator, processes
        self.tokenizer, self.args = tokenizer, args
        self.uses_adapter = hasattr(policy, "disable_adapter")
        self.model, self.optimizer = accelerator.prepare(policy, optimizer)
        self.reference = reference.to(accelerator.device) if reference is not None else None
        self.backoff = OutOfMemoryBackoff(args, self.optimizer, warn)

    def fine_tune(
        self,
        samples: list[Completion],
        prompts: list[Prompt],
        weights: list[float] | None = None,
        shuffle_seed: str = "",
    ) -> dict[str, Any]:
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
                order, args.per_device_train_batch_size, token_counts
            )
        retries_before = self.backoff.num_retries
        metrics = self.steps(minibatches)
        metrics["num_masked_truncated"] = num_kept - len(rows)  # clipped, left out of the loss
        metrics["num_oom_retries"] = self.backoff.num_retries - retries_before
        return metrics

    def steps(self, minibatches: list[Minibatch]) -> dict[str, Any]:
        """An optimizer step per `gradient_accumulation_steps` minibatches, each redone with
        half the micro-batch after running out of memory; the steps' mean loss statistics and
        grad norm, and the number of minibatches skipped as non-finite."""
        accumulation = self.args.gradient_accumulation_steps
        totals: dict[str, list[float]] = {key: [] for key in LOSS_STATS}
        grad_norms: list[float] = []
        skipped = 0
        for start in range(0, len(minibatches), accumulation):
            group = minibatches[start : start + accumulation]
            stats, norm = self.backoff.run(
                "per_device_train_batch_size", lambda micro, g=group: self.optimizer_step(g, micro)
            )
            if norm is None:
                skipped += len(group)
                continue
            grad_norms.append(norm)
            for minibatch_stats in stats:
                for key, value in minibatch_stats.items():
                    if not math.isnan(value):  # a KL not measured (no reference, no CE row)
                        totals[key].append(value)
        metrics: dict[str, Any] = {key: mean_or_nan(values) for key, values in totals.items()}
        metrics["grad_norm"] = mean_or_nan(grad_norms)
        metrics["num_optimizer_steps"] = len(grad_norms)  # steps taken, skipped ones not
        metrics["num_skipped_minibatches"] = skipped
        return metrics

    def optimizer_step(
        self, group: list[Minibatch], micro: int
    ) -> tuple[list[dict[str, float]], float | None]:
        """Accumulate the gradients of `group`'s minibatches, then step; the grad norm, or None
        if the step was skipped as non-finite.

        Rows are (prompt ids, completion ids, weight or None); each minibatch is (this
        process's rows, the whole minibatch's `token_counts`, its number of rows)
        (`Processes.minibatches`) and may be split into micro-batches of `micro` sequences;
        their losses are weighted so that the gradient equals the whole minibatch's: the
        token-mean CE by the micro-batch's share of the minibatch's CE tokens, the
        unlikelihood by its share of the negative rows' tokens, the KL (a sum over examples)
        as is. On many processes the loss is multiplied by their number (DDP averages);
        out-of-memory and non-finite losses are agreed before DDP syncs. Under FSDP every
        forward and backward is a collective: a process with fewer pieces runs idle ones
        (`idle_pass`) until all have run as many, a non-finite piece still runs its backward
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
        keys = tuple(k for k in LOSS_STATS if k != "loss")
        stats = [dict.fromkeys(keys, 0.0) for _ in group]
        out_of_memory = non_finite = False
        for j, (m, piece) in enumerate(pieces):
            if not piece:
                self.idle_pass()
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
            ce_tokens, negative_tokens, toward = token_counts(piece)
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
        clip = self.args.max_grad_norm or float("inf")  # the norm before clipping either way
        norm = acc.clip_grad_norm_(self.model.parameters(), clip)
        if norm is not None and not torch.isfinite(norm):
            self.optimizer.zero_grad()
            return [], None
        self.optimizer.step()
        self.optimizer.zero_grad()
        return stats, float(norm) if norm is not None else float("nan")

    def idle_pass(self) -> None:
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
    def reference_logits(self, batch: TrainingBatch, keep: int) -> torch.Tensor | None:
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
