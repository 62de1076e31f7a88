"""The exact KL: summed over the vocabulary at every answer position, checked by hand, and
against the k1 estimate both being unbiased for the sequence KL on the policy's own samples."""

from __future__ import annotations

import statistics

import pytest
import torch

from superhf.config import EvalConfig
from superhf.evaluation.heldout import sample_completions
from superhf.evaluation.kl import completion_batches, exact_kl, kl_estimate
from tests.conftest import make_tiny_llama

PROMPTS = [f"Question {i}: what do you think about topic {i}?" for i in range(4)]


def _own_samples(model, tokenizer, n: int, length: int = 6):
    config = EvalConfig(
        num_generations=n, max_completion_length=length, temperature=1.0, top_p=1.0, top_k=0
    )
    torch.manual_seed(0)
    return sample_completions(model, tokenizer, PROMPTS, config)


def test_exact_kl_is_the_vocabulary_sum_at_each_answer_position(tokenizer):
    policy = make_tiny_llama(len(tokenizer), seed=0)
    reference = make_tiny_llama(len(tokenizer), seed=1)
    answers = _own_samples(policy, tokenizer, 2)
    exact = exact_kl(policy, reference, tokenizer, PROMPTS, answers)
    assert exact_kl(policy, policy, tokenizer, PROMPTS, answers).per_sequence == pytest.approx(
        [0.0] * len(answers), abs=1e-5
    )
    by_hand, tokens = [], []
    for _, batch in completion_batches(tokenizer, PROMPTS, answers, 1, torch.device("cpu")):
        mask = batch.labels[:, 1:] != -100
        with torch.no_grad():
            logp = torch.log_softmax(policy(**batch.model_inputs()).logits[:, :-1], -1)
            logq = torch.log_softmax(reference(**batch.model_inputs()).logits[:, :-1], -1)
        by_hand.append(float((logp.exp() * (logp - logq)).sum(-1)[mask].sum()))
        tokens.append(int(mask.sum()))
    # completion_batches yields shortest first; compare as multisets of (sum, tokens)
    got = sorted(zip(exact.per_sequence, exact.num_tokens, strict=True))
    want = sorted(zip(by_hand, tokens, strict=True))
    for (a, n), (b, m) in zip(got, want, strict=True):
        assert n == m and a == pytest.approx(b, rel=1e-4)
    assert exact.to_dict()["estimator"].startswith("exact per position")


def test_exact_and_k1_agree_on_the_policys_own_samples(tokenizer):
    """Both are unbiased for the sequence KL when the answers are drawn from the policy at
    temperature 1 without truncation; the exact one has far less variance."""
    policy = make_tiny_llama(len(tokenizer), seed=0)
    reference = make_tiny_llama(len(tokenizer), seed=1)
    answers = _own_samples(policy, tokenizer, 24)
    exact = exact_kl(policy, reference, tokenizer, PROMPTS, answers).per_sequence
    k1 = kl_estimate(policy, reference, tokenizer, PROMPTS, answers).per_sequence
    se = statistics.stdev(k1) / len(k1) ** 0.5
    assert statistics.fmean(exact) > 0.05
    assert abs(statistics.fmean(exact) - statistics.fmean(k1)) < 4 * se
    assert statistics.stdev(exact) < statistics.stdev(k1)
