"""The SuperHF loss: cross-entropy on completion tokens plus a KL prior toward the reference.

    loss = CE(completion tokens) + beta * sum_examples mean_t KL(p_ref || p_theta)

With per-example `weights` (the filter's options, `superhf.train.filtering`), examples of
weight w > 0 are cross-entropy targets weighted by w, and examples of weight w < 0 are pushed
down with the token-level unlikelihood -log(1 - p_theta(y_t)) weighted by |w| (Welleck et al.
2019, "Neural Text Generation with Unlikelihood Training"; as a negative-sample term, Zhu et
al. 2025, "The Surprising Effectiveness of Negative Reinforcement in LLM Reasoning"). Unlike
a negative cross-entropy (log p, unbounded below), the unlikelihood is >= 0, is 0 when the
token has probability 0, and its gradient with respect to the logits has norm at most 2: it
cannot diverge. The KL covers the positive examples only, so `beta` keeps its meaning.

Positions are shifted by one (logits at t predict token t+1), so the KL compares the
distributions that predict completion tokens, and the CE targets are exactly the completion
tokens (the sampled ids, through the end token that ended the sample; none after a clipped
one), whatever the padding side (docs/METHOD.md, the training loop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from superhf.batching import IGNORE_INDEX


@dataclass
class LossOutput:
    loss: torch.Tensor
    """What is optimised: sft_loss + kl_loss."""
    sft_loss: torch.Tensor
    """Token-mean cross-entropy over the minibatch's completion tokens (end tokens included)."""
    kl_loss: torch.Tensor
    """beta * the sum over examples of their mean per-token KL; 0 when no reference."""
    kl: torch.Tensor
    """Mean over examples of their mean per-token KL(p_ref || p_theta); NaN without a reference."""
    unlikelihood_loss: torch.Tensor | None = None
    """Token-mean of |w| * -log(1 - p(token)) over the negative examples' tokens (included in
    `loss`); 0 without weights or negatives."""

    def __post_init__(self) -> None:
        if self.unlikelihood_loss is None:
            self.unlikelihood_loss = torch.zeros_like(self.sft_loss)


def superhf_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ref_logits: torch.Tensor | None,
    beta: float,
    weights: torch.Tensor | None = None,
) -> LossOutput:
    """The loss of one minibatch: CE on the labelled tokens plus beta * the KL to the reference.

    Args:
        logits: the policy's logits, (batch, seq, vocab).
        labels: token ids where a completion token sits, IGNORE_INDEX elsewhere (batch, seq),
            as `superhf.batching.build_training_batch` makes them.
        ref_logits: the reference's logits at the same positions, or None (no KL).
        beta: the KL coefficient; at 0 the KL is still measured, not optimised.
        weights: None (the paper: every example a plain CE target), or one weight per
            example (batch,): w > 0 a CE target weighted by w, w < 0 an unlikelihood target
            weighted by |w|, w = 0 not trained on. `sft_loss` is then the w-weighted sum of the
            positive examples' token CE over their token count, `unlikelihood_loss` the
            |w|-weighted sum over the negative examples' token count.

    Returns:
        `LossOutput`: `loss` to optimise, and `sft_loss`, `kl_loss`, `kl` to log.

    Example:
        >>> batch = build_training_batch([[5, 6]], [[7, 8, 2]], tokenizer)
        >>> logits = model(**batch.model_inputs()).logits
        >>> out = superhf_loss(logits, batch.labels, ref_logits=None, beta=0.0)
        >>> out.loss.backward()
    """
    logits = logits[:, :-1].float()
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    if weights is None:
        sft_loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX
        )
        unlikelihood = torch.zeros_like(sft_loss)
    else:
        sft_loss, unlikelihood = _weighted_terms(logits, targets, mask, weights)
    if ref_logits is None:
        nan = torch.full((), float("nan"), device=logits.device)
        zero = torch.zeros_like(sft_loss)
        return LossOutput(sft_loss + unlikelihood, sft_loss, zero, nan, unlikelihood)
    # Only the positions that predict completion tokens enter the KL: select them before the
    # full-vocabulary softmaxes to spare memory.
    logp = F.log_softmax(logits[mask], dim=-1)
    ref_logp = F.log_softmax(ref_logits[:, :-1][mask].float(), dim=-1)
    per_token = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    example_of_token = torch.arange(mask.shape[0], device=mask.device)[:, None].expand_as(mask)[
        mask
    ]
    per_example = torch.zeros(mask.shape[0], device=logits.device).index_add(
        0, example_of_token, per_token
    ) / mask.sum(-1).clamp(min=1)
    if weights is not None:  # the KL prior covers what is trained toward
        per_example = per_example[weights.to(per_example.device) > 0]
    # At beta = 0 the KL is only logged: keep it out of the graph (0 * inf would be NaN).
    kl_loss = beta * per_example.sum() if beta else torch.zeros_like(sft_loss)
    kl = per_example.mean().detach()
    return LossOutput(sft_loss + unlikelihood + kl_loss, sft_loss, kl_loss, kl, unlikelihood)


def _weighted_terms(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weighted CE of the positive examples, weighted unlikelihood of the negative ones),
    each a token mean over its own examples' tokens; 0 when there are none."""
    w = weights.to(device=logits.device, dtype=logits.dtype)[:, None].expand_as(targets)
    positive, negative = mask & (w > 0), mask & (w < 0)
    ce = F.cross_entropy(
        logits[positive], targets[positive], reduction="none"
    )  # (positive tokens,)
    sft_loss = (ce * w[positive]).sum() / positive.sum().clamp(min=1)
    # log(1 - p_y), accurate at both ends: log1p(-p) when p < 1/2 (the difference below would
    # cancel), logsumexp over the other tokens when p >= 1/2 (1 - p would round to 0)
    z = logits[negative]
    y = targets[negative][:, None]
    normaliser = torch.logsumexp(z, -1)
    logp = z.gather(1, y).squeeze(1) - normaliser
    small = torch.log1p(-logp.clamp(max=-math.log(2)).exp())
    large = torch.logsumexp(z.scatter(1, y, float("-inf")), -1) - normaliser
    per_token = -torch.where(logp < -math.log(2), small, large)
    unlikelihood = (per_token * -w[negative]).sum() / negative.sum().clamp(min=1)
    return sft_loss, unlikelihood
