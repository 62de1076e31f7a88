"""Token rows to padded tensors: the one place that decides padding, masks and positions.

Generation, the loss, the KL estimate and the default reward's judge all build their
batches here, so position ids always count real tokens only (left padding sees the
positions generation saw) and labels mark exactly the completion tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


@dataclass
class TrainingBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    """input_ids where a completion token (its end token included) sits, IGNORE_INDEX elsewhere."""

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


def encode_prompt(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """A prompt's ids as the model expects them: generation, training, the KL and every length
    check encode prompts here, so they all see the same ids.

    A leading BOS when the tokenizer's own encoding starts with one (LLaMA-family models were
    trained with it); never a second one when the text already begins with it (a chat template
    wrote it), and never the EOS some tokenizers also append (a prompt is not a finished text).
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is None or ids[:1] == [bos]:
        return ids
    if tokenizer(text, add_special_tokens=True)["input_ids"][:1] == [bos]:
        return [bos, *ids]
    return ids


def build_training_batch(
    prompt_ids: list[list[int]],
    completion_ids: list[list[int]],
    tokenizer: PreTrainedTokenizerBase,
    padding_side: str = "left",
) -> TrainingBatch:
    """Concatenate prompt + completion per example and pad; label exactly the completion ids.

    Nothing is appended: a completion's ids already end with the token that ended its sample
    (`Completion.training_ids`), and a clipped one with none, so the policy is never taught
    to stop where it was only cut off.
    """
    pad = tokenizer.pad_token_id
    rows = [p + c for p, c in zip(prompt_ids, completion_ids, strict=True)]
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


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token-id rows left-padded: (input_ids, attention_mask, position_ids counting real tokens)."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, width - len(ids) :] = torch.tensor(ids)
        mask[i, width - len(ids) :] = 1
    return input_ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)
