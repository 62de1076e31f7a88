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

from superhf.batching import IGNORE_INDEX
from superhf.data import Prompt
from superhf.evaluation.entropy import token_entropy
from superhf.evaluation.heldout import (
    distinct_n,
    fork_all_rng,
    meteor_across_prompts,
    template_share,
)
from superhf.evaluation.kl import completion_batches
from superhf.generation import Completion


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
) -> dict[str, Any]:
    """`entropy` and `kl` per token on the answers (POLICY_SIGNALS_NOTE); `kl` is NaN
    without a reference. `reference=policy` for a PEFT policy: its start is the same model
    with the adapter disabled (no second copy)."""
    entropy: list[float] = []
    kl: list[float] = []
    adapter = reference is policy and hasattr(policy, "disable_adapter")
    was_training = policy.training
    policy.eval()
    device = next(policy.parameters()).device
    for _, batch in completion_batches(tokenizer, prompt_texts, completions, batch_size, device):
        keep = batch.logits_to_keep()
        mask = batch.labels[:, -keep:][:, 1:] != IGNORE_INDEX
        counts = mask.sum(-1).clamp(min=1)
        logits = policy(**batch.model_inputs(), logits_to_keep=keep).logits[:, :-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        entropy += ((token_entropy(logits).masked_fill(~mask, 0.0)).sum(-1) / counts).tolist()
        ref_logits = None
        if adapter:
            with policy.disable_adapter():
                ref_logits = policy(**batch.model_inputs(), logits_to_keep=keep).logits
        elif reference is not None:
            ref_logits = reference(**batch.model_inputs(), logits_to_keep=keep).logits
        if ref_logits is not None:
            ref_logp = torch.log_softmax(ref_logits[:, :-1].float().to(logp.device), dim=-1)
            per_token = (logp.exp() * (logp - ref_logp)).sum(-1).masked_fill(~mask, 0.0)
            kl += (per_token.sum(-1) / counts).tolist()
    policy.train(was_training)
    return {
        "entropy": statistics.fmean(entropy) if entropy else math.nan,
        "kl": statistics.fmean(kl) if kl else math.nan,
    }
