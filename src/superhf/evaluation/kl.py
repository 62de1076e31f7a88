"""How far a policy moved from its reference, on the policy's own sampled completions.

    kl = kl_estimate(policy, reference, tokenizer, prompt_texts, completions)   # k1, any sampling
    kl = exact_kl(policy, reference, tokenizer, prompt_texts, completions)      # full vocabulary

`superhf eval` reports both beside the rewards. `kl_estimate` is the k1 log-ratio on the eval
answers (KL only when they were sampled at temperature 1 without top-p/top-k); `exact_kl`
sums the two next-token distributions over the vocabulary at every answer position, on
answers `superhf eval` draws from the policy itself for it (EXACT_KL_SAMPLING): the KL that
RLHF frontiers put on their x-axis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from superhf.batching import IGNORE_INDEX, TrainingBatch, build_training_batch, encode_prompt
from superhf.evaluation.heldout import mean_se
from superhf.generation import Completion

KL_ESTIMATOR = "k1: mean over sampled completions of sum_t log pi - log pi_ref"
KL_SAMPLING_NOTE = (
    "Completions are sampled with the eval settings (temperature, top_p, top_k), not from pi "
    "itself, while log pi and log pi_ref are the models' untempered log-probabilities: the "
    "estimate is E_q[log pi(y) - log pi_ref(y)] for the tempered nucleus distribution q, which "
    "is KL(pi || pi_ref) only at temperature 1, top_p 1, top_k 0. Scored sequence: the "
    "sampled ids through the token that ended the sample (no end token when clipped), the "
    "prompt encoded as generation saw it: what the trainer fine-tunes on."
)


EXACT_KL = (
    "exact per position: sum over the vocabulary of pi * (log pi - log pi_ref) of the two "
    "untempered next-token distributions at every position that predicts a sampled answer "
    "token (its end token included); per token: the mean over an answer's positions, per "
    "sequence: their sum (an unbiased estimate of the sequence KL, the answers being drawn "
    "from pi); then the mean over answers"
)
EXACT_KL_SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": 0}
"""How the answers `exact_kl` reads are drawn: from the policy itself, untempered, untruncated."""


@dataclass
class KLEstimate:
    """Per-completion values (k1: sum over its tokens of log pi - log pi_ref; exact: sum over
    its positions of the full-vocabulary KL), and token counts."""

    per_sequence: list[float]
    num_tokens: list[int]
    estimator: str = KL_ESTIMATOR

    def to_dict(self) -> dict[str, Any]:
        per_token = [s / max(n, 1) for s, n in zip(self.per_sequence, self.num_tokens, strict=True)]
        return {
            "estimator": self.estimator,
            "per_sequence": mean_se(self.per_sequence),
            "per_token": mean_se(per_token),
        }


def completion_batches(
    tokenizer: PreTrainedTokenizerBase,
    prompt_texts: Sequence[str],
    completions: Sequence[Completion],
    batch_size: int,
    device: torch.device,
) -> Iterator[tuple[list[int], TrainingBatch]]:
    """(indices into `completions`, their batch), shortest first so a batch pads little; each
    completion as the trainer fine-tunes on it: its prompt as generation encoded it, then the
    sampled ids through the token that ended it (`Completion.training_ids`)."""
    prompt_ids = [encode_prompt(tokenizer, t) for t in prompt_texts]
    completion_ids = [c.training_ids(tokenizer) for c in completions]
    order = sorted(range(len(completions)), key=lambda i: len(completion_ids[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = build_training_batch(
            [prompt_ids[completions[i].prompt_index] for i in rows],
            [completion_ids[i] for i in rows],
            tokenizer,
        )
        yield rows, batch.to(device)


def _completion_log_probs(model: PreTrainedModel, batch: Any, labels: torch.Tensor) -> torch.Tensor:
    """log p(token) at every labelled position, 0 elsewhere; (batch, positions)."""
    keep = batch.logits_to_keep()
    logits = model(**batch.model_inputs(), logits_to_keep=keep).logits[:, :-1].float()
    targets = labels[:, -keep:][:, 1:]
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked.masked_fill(targets == IGNORE_INDEX, 0.0)


@torch.no_grad()
def kl_estimate(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_texts: Sequence[str],
    completions: Sequence[Completion],
    batch_size: int = 8,
    advance: Callable[[int], None] = lambda _: None,
) -> KLEstimate:
    """Monte-Carlo KL of the policy to the reference on its own sampled completions (k1).

    For each completion y: sum_t log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t), over the
    ids it sampled (`Completion.training_ids`): through the token that ended it, whichever of
    the model's end ids that was; no end token when clipped at the length limit.
    Unbiased for KL(pi || pi_ref) of whole sequences when y ~ pi; see KL_SAMPLING_NOTE for
    tempered samples. Pass `reference=policy` for a PEFT policy: the reference is then the
    same model with its adapter disabled (no second copy in memory).
    """

    def measure(batch: TrainingBatch, adapter: bool) -> tuple[list[float], list[int]]:
        logp = _completion_log_probs(policy, batch, batch.labels)
        if adapter:
            with policy.disable_adapter():
                ref_logp = _completion_log_probs(policy, batch, batch.labels)
        else:
            ref_batch = batch.to(next(reference.parameters()).device)
            ref_logp = _completion_log_probs(reference, ref_batch, ref_batch.labels)
        sums = (logp - ref_logp.to(logp.device)).sum(-1).tolist()
        return sums, (batch.labels[:, 1:] != IGNORE_INDEX).sum(-1).tolist()

    return _over_answers(
        policy, reference, tokenizer, prompt_texts, completions, batch_size, advance, measure
    )


def answer_log_softmax(
    model: PreTrainedModel, batch: TrainingBatch, adapter_off: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's log next-token distribution (float32) at every position that predicts an
    answer token, flattened to (positions, vocabulary), and each position's row in the batch.
    Only these positions enter the softmax, as in the loss. `adapter_off`: the PEFT model's
    start (its adapter disabled)."""
    keep = batch.logits_to_keep()
    mask = batch.labels[:, -keep:][:, 1:] != IGNORE_INDEX
    rows = torch.arange(mask.shape[0], device=mask.device)[:, None].expand_as(mask)[mask]
    if adapter_off:
        with model.disable_adapter():
            logits = model(**batch.model_inputs(), logits_to_keep=keep).logits
    else:
        logits = model(**batch.model_inputs(), logits_to_keep=keep).logits
    return torch.log_softmax(logits[:, :-1][mask.to(logits.device)].float(), dim=-1), rows


@torch.no_grad()
def exact_kl(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_texts: Sequence[str],
    completions: Sequence[Completion],
    batch_size: int = 8,
    advance: Callable[[int], None] = lambda _: None,
) -> KLEstimate:
    """KL(pi || pi_ref) summed over the vocabulary at every answer position (EXACT_KL), on
    `completions` that should be pi's own samples at EXACT_KL_SAMPLING. `reference=policy`
    for a PEFT policy: its start is the same model with the adapter disabled."""

    def measure(batch: TrainingBatch, adapter: bool) -> tuple[list[float], list[int]]:
        logp, where = answer_log_softmax(policy, batch)
        if adapter:
            ref_logp, _ = answer_log_softmax(policy, batch, adapter_off=True)
        else:
            ref_logp, _ = answer_log_softmax(
                reference, batch.to(next(reference.parameters()).device)
            )
        kl = (logp.exp() * (logp - ref_logp.to(logp.device))).sum(-1)
        rows = batch.labels.shape[0]
        sums = torch.zeros(rows, device=kl.device).index_add(0, where.to(kl.device), kl)
        return sums.tolist(), torch.bincount(where, minlength=rows).tolist()

    estimate = _over_answers(
        policy, reference, tokenizer, prompt_texts, completions, batch_size, advance, measure
    )
    estimate.estimator = EXACT_KL
    return estimate


def _over_answers(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_texts: Sequence[str],
    completions: Sequence[Completion],
    batch_size: int,
    advance: Callable[[int], None],
    measure: Callable[[TrainingBatch, bool], tuple[list[float], list[int]]],
) -> KLEstimate:
    """`measure`'s per-answer sums and token counts over `completions` in batches, both models
    in eval mode (the policy's mode restored after); `measure` gets each batch and whether the
    reference is the policy with its adapter disabled."""
    adapter = reference is policy and hasattr(policy, "disable_adapter")
    per_sequence = [0.0] * len(completions)
    num_tokens = [0] * len(completions)
    was_training = policy.training
    policy.eval()
    reference.eval()
    device = next(policy.parameters()).device
    for rows, batch in completion_batches(tokenizer, prompt_texts, completions, batch_size, device):
        sums, counts = measure(batch, adapter)
        for r, i in enumerate(rows):
            per_sequence[i], num_tokens[i] = sums[r], counts[r]
        advance(len(rows))
    policy.train(was_training)
    return KLEstimate(per_sequence, num_tokens)
