"""The SuperHF loss: cross-entropy on completion tokens plus a KL prior toward the reference.

    loss = CE(completion tokens + EOS) + beta * sum_examples mean_t KL(p_ref || p_theta)

Positions are shifted by one (logits at t predict token t+1), so the KL compares the
distributions that predict completion tokens, and the CE targets are exactly the completion
tokens and EOS, whatever the padding side (SUPERHF.md, sections 2 and 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


@dataclass
class TrainingBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    """input_ids where a completion token or its EOS sits, IGNORE_INDEX elsewhere."""

    def to(self, device: torch.device | str) -> TrainingBatch:
        return TrainingBatch(*(t.to(device) for t in vars(self).values()))

    def logits_to_keep(self) -> int:
        """How many final positions need logits: from the one before the first label on."""
        has_label = (self.labels != IGNORE_INDEX).any(0)
        first = int(has_label.nonzero()[0]) if has_label.any() else self.labels.shape[1] - 1
        return self.labels.shape[1] - first + 1 if first > 0 else self.labels.shape[1]

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
        }


def build_training_batch(
    prompt_ids: list[list[int]],
    completion_ids: list[list[int]],
    tokenizer: PreTrainedTokenizerBase,
    padding_side: str = "left",
) -> TrainingBatch:
    """Concatenate prompt + completion + EOS per example and pad; label only completion + EOS."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    rows = [p + c + [eos] for p, c in zip(prompt_ids, completion_ids, strict=True)]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (row, p) in enumerate(zip(rows, prompt_ids, strict=True)):
        start = width - len(row) if padding_side == "left" else 0
        input_ids[i, start : start + len(row)] = torch.tensor(row)
        attention_mask[i, start : start + len(row)] = 1
        labels[i, start + len(p) : start + len(row)] = torch.tensor(row[len(p) :])
    # Positions count real tokens only, so left padding sees the positions generation saw.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return TrainingBatch(input_ids, attention_mask, position_ids, labels)


@dataclass
class LossOutput:
    loss: torch.Tensor
    """What is optimised: sft_loss + kl_loss."""
    sft_loss: torch.Tensor
    """Token-mean cross-entropy over the minibatch's completion tokens (and EOS)."""
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
    """The loss of one minibatch. `logits` and `ref_logits` are (batch, seq, vocab)."""
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
    kl_loss = beta * per_example.sum()
    return LossOutput(sft_loss + kl_loss, sft_loss, kl_loss, per_example.mean().detach())
