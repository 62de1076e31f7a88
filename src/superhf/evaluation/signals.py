"""The signals the reward-hacking monitor reads from one batch of answers (docs/MONITOR.md).

    text = text_signals(prompts, completions, meteor_pairs=200, seed=0)
    policy = policy_signals(policy, reference, tokenizer, prompt_texts, completions)

Text signals need only the answers, so the samples each training iteration already draws
give them at no extra generation: METEOR similarity across prompts, distinct-2, mean length
in tokens, and the template share. Policy signals need one forward pass of the policy and
one of its start on the answers: next-token entropy and the exact per-token KL.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from superhf.data import Prompt
from superhf.evaluation.heldout import (
    distinct_n,
    fork_all_rng,
    meteor_across_prompts,
    template_share,
)
from superhf.evaluation.kl import answer_log_softmax, completion_batches
from superhf.generation import Completion

POLICY_SIGNAL_ANSWERS = 8
"""Entropy and KL are read on this many answers: the two forward passes over prompt and
answer are the dearest part of an evaluation (docs/MONITOR.md, Cost), and 8 answers give a
few hundred positions to average."""

POLICY_SIGNALS_NOTE = (
    "At every position that predicts one of the answer's sampled tokens (its end token "
    "included): the entropy in nats of the policy's untempered next-token distribution, and "
    "the exact KL(policy || start) of the two next-token distributions summed over the "
    "vocabulary; each averaged over an answer's positions, then over answers. The answers are "
    "the ones being monitored (held-out answers at the eval sampling, or training samples)."
)


def text_signals(
    prompts: Sequence[Prompt],
    completions: Sequence[Completion],
    meteor_pairs: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """`meteor` (across prompts), `distinct_2`, `mean_length` (tokens), `template_share`."""
    texts = [c.text for c in completions]
    with fork_all_rng():  # METEOR's pair sampling must not move training's streams
        meteor = meteor_across_prompts(completions, meteor_pairs, seed, prompts)
    return {
        "meteor": meteor.mean if meteor is not None else math.nan,
        "distinct_2": distinct_n(texts, 2),
        "mean_length": statistics.fmean(c.num_tokens for c in completions)
        if completions
        else math.nan,
        "template_share": template_share(texts),
    }


@torch.no_grad()
def policy_signals(
    policy: PreTrainedModel,
    reference: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    prompt_texts: Sequence[str],
    completions: Sequence[Completion],
    batch_size: int = 8,
    max_answers: int | None = POLICY_SIGNAL_ANSWERS,
) -> dict[str, Any]:
    """`entropy` and `kl` per token on the first `max_answers` answers (POLICY_SIGNALS_NOTE);
    `kl` is NaN without a reference. `reference=policy` for a PEFT policy: its start is the
    same model with the adapter disabled (no second copy)."""
    completions = list(completions)[:max_answers]
    entropy: list[float] = []
    kl: list[float] = []
    adapter = reference is policy and hasattr(policy, "disable_adapter")
    was_training = policy.training
    policy.eval()
    device = next(policy.parameters()).device
    for _, batch in completion_batches(tokenizer, prompt_texts, completions, batch_size, device):
        logp, rows = answer_log_softmax(policy, batch)
        counts = torch.bincount(rows, minlength=batch.labels.shape[0]).clamp(min=1)
        p = logp.exp()
        entropy += _per_answer(-(p * logp).sum(-1), rows, counts)
        ref_logp = None
        if adapter:
            ref_logp, _ = answer_log_softmax(policy, batch, adapter_off=True)
        elif reference is not None:
            ref_logp, _ = answer_log_softmax(reference, batch)
        if ref_logp is not None:
            kl += _per_answer((p * (logp - ref_logp.to(logp.device))).sum(-1), rows, counts)
    policy.train(was_training)
    _reshard(policy)
    return {
        "entropy": statistics.fmean(entropy) if entropy else math.nan,
        "kl": statistics.fmean(kl) if kl else math.nan,
    }


def _per_answer(values: torch.Tensor, rows: torch.Tensor, counts: torch.Tensor) -> list[float]:
    """The mean over each answer's positions of per-position `values` (flattened by `rows`)."""
    sums = torch.zeros(counts.shape[0], device=values.device).index_add(0, rows, values)
    return (sums / counts).tolist()


def _reshard(model: torch.nn.Module) -> None:
    """FSDP2 leaves its root unsharded after a forward with no backward; reshard, as the
    optimizer's state (and the next training step) expects. A no-op for other models."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
