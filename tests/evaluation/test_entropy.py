"""The answer-position entropy: equal to the entropy computed by hand from the full forward
pass, 0 for a one-hot distribution, log V for a uniform one."""

from __future__ import annotations

import math

import torch

from superhf.batching import encode_prompt
from superhf.evaluation.entropy import entropy_estimate, token_entropy
from superhf.generation import Completion
from tests.conftest import make_tiny_llama


def test_token_entropy_bounds():
    assert math.isclose(token_entropy(torch.zeros(10)).item(), math.log(10), rel_tol=1e-6)
    one_hot = torch.full((10,), -1e4)
    one_hot[3] = 0.0
    assert token_entropy(one_hot).item() < 1e-6


def test_entropy_estimate_matches_a_direct_computation(tokenizer):
    model = make_tiny_llama(len(tokenizer)).eval()
    prompts = ["Hello there, how are you?", "Tell me a story."]
    completions = [
        Completion(0, "fine", 3, False, [11, 5, 2]),
        Completion(1, "once", 2, True, [7, 9]),
        Completion(0, "ok", 1, False, [2]),
    ]
    result = entropy_estimate(model, tokenizer, prompts, completions, batch_size=2)
    expected = []
    for c in completions:
        ids = encode_prompt(tokenizer, prompts[c.prompt_index])
        full = torch.tensor([ids + c.token_ids])
        with torch.no_grad():
            logits = model(full).logits[0]
        # positions predicting each answer token: len(ids)-1 ... len(full)-2
        positions = range(len(ids) - 1, len(ids) - 1 + len(c.token_ids))
        expected.append(sum(token_entropy(logits[p]).item() for p in positions) / len(positions))
    assert math.isclose(result["mean"], sum(expected) / 3, rel_tol=1e-4)
    assert result["n"] == 3
    assert 0 < result["mean"] <= math.log(len(tokenizer)) + 1e-4
