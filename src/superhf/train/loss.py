"""The SuperHF loss: cross-entropy on completion tokens plus a KL prior toward the reference.

    loss = CE(completion tokens) + beta * sum_examples mean_t KL(p_ref || p_theta)

Positions are shifted by one (logits at t predict token t+1), so the KL compares the
distributions that predict completion tokens, and the CE targets are exactly the completion
tokens (the sampled ids, through the end token that ended the sample; none after a clipped
one), whatever the padding side (docs/METHOD.md, the training loop).
"""

from __future__ import annotations

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


def superhf_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ref_logits: torch.Tensor | None,
    beta: float,
) -> LossOutput:
    """The loss of one minibatch: CE on the labelled tokens plus beta * the KL to the reference.

    Args:
        logits: the policy's logits, (batch, seq, vocab).
        labels: token ids where a completion token sits, IGNORE_INDEX elsewhere (batch, seq),
            as `superhf.batching.build_training_batch` makes them.
        ref_logits: the reference's logits at the same positions, or None (no KL).
        beta: the KL coefficient; at 0 the KL is still measured, not optimised.

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
    sft_loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX
    )
    if ref_logits is None:
        nan = torch.full((), float("nan"), device=logits.device)
        return LossOutput(sft_loss, sft_loss, torch.zeros_like(sft_loss), nan)
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
    # At beta = 0 the KL is only logged: keep it out of the graph (0 * inf would be NaN).
    kl_loss = beta * per_example.sum() if beta else torch.zeros_like(sft_loss)
    return LossOutput(sft_loss + kl_loss, sft_loss, kl_loss, per_example.mean().detach())
