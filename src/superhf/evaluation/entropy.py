"""Entropy of the policy's next-token distribution at the positions of its sampled answers.

    entropy = entropy_estimate(policy, tokenizer, prompt_texts, completions)

Rejection-sampling methods are reported to lose diversity: a lower entropy says the policy
has become more certain of each next token. `superhf eval` and `superhf compare` report it
beside METEOR and distinct-n.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from superhf.batching import IGNORE_INDEX
from superhf.evaluation.heldout import mean_se
from superhf.evaluation.kl import completion_batches
from superhf.generation import Completion

ENTROPY_NOTE = (
    "Mean over answers of the mean, over the positions that predict the answer's sampled "
    "tokens (its end token included), of the entropy in nats of the model's untempered "
    "next-token distribution (temperature 1, no top-p)."
)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits) over the last dimension."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


@torch.no_grad()
def entropy_estimate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_texts: Sequence[str],
    completions: Sequence[Completion],
    batch_size: int = 8,
    advance: Callable[[int], None] = lambda _: None,
) -> dict[str, Any]:
    """mean_se over completions of their mean per-position entropy (see ENTROPY_NOTE)."""
    per_completion = [0.0] * len(completions)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    for rows, batch in completion_batches(tokenizer, prompt_texts, completions, batch_size, device):
        keep = batch.logits_to_keep()
        logits = model(**batch.model_inputs(), logits_to_keep=keep).logits[:, :-1]
        mask = batch.labels[:, -keep:][:, 1:] != IGNORE_INDEX
        entropy = token_entropy(logits).masked_fill(~mask, 0.0)
        means = (entropy.sum(-1) / mask.sum(-1).clamp(min=1)).tolist()
        for r, i in enumerate(rows):
            per_completion[i] = means[r]
        advance(len(rows))
    model.train(was_training)
    return {**mean_se(per_completion), "note": ENTROPY_NOTE}
