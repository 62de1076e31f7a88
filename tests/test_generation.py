"""Generation: one generate call per group of prompts with num_return_sequences; trimming."""

from __future__ import annotations

import pytest
import torch

from superhf.config import SuperHFConfig
from superhf.generation import (
    NucleusSampler,
    generate_completions,
    stop_token_ids,
    trim_completion,
)
from tests.conftest import make_tiny_llama


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return make_tiny_llama(len(tokenizer)).eval()


def test_all_samples_of_a_prompt_come_from_one_call_with_num_return_sequences(tiny, tokenizer):
    calls, samplers = [], []
    original = tiny.generate

    def spy(*args, **kwargs):
        calls.append((kwargs["input_ids"].shape[0], kwargs["generation_config"]))
        samplers.append(kwargs["logits_processor"][0])
        return original(*args, **kwargs)

    tiny.generate = spy
    try:
        config = SuperHFConfig(
            num_generations=4, max_completion_length=6, generation_batch_size=8, stop_sequences=[]
        )
        prompts = ["Hello there", "A much longer prompt about many things", "Hi"]
        completions, stats = generate_completions(tiny, tokenizer, prompts, config)
    finally:
        del tiny.generate
    # 8 sequences per call / 4 samples = 2 prompts per call; each prompt appears once per call
    assert [rows for rows, _ in calls] == [2, 1]
    assert all(gc.num_return_sequences == 4 for _, gc in calls)
    # transformers' own warpers are off (top_k=0 explicitly); NucleusSampler applies the config
    assert all(gc.top_k == 0 and gc.top_p == 1.0 and gc.do_sample for _, gc in calls)
    assert all((s.top_p, s.top_k, s.temperature) == (0.95, 0, 1.0) for s in samplers)
    counts = [sum(c.prompt_index == i for c in completions) for i in range(3)]
    assert sum(counts) + stats.num_empty == 12
    assert stats.num_sampled_tokens > 0 and stats.seconds > 0


def test_trim_at_eos_and_turn_delimiters(tokenizer):
    eos = tokenizer.eos_token_id
    ids = tokenizer("Sure, here it is.", add_special_tokens=False)["input_ids"]
    text, n, clipped = trim_completion(ids + [eos] + ids, [eos], [], tokenizer)
    assert text == "Sure, here it is." and n == len(ids) + 1 and not clipped
    ids2 = tokenizer("Yes.\n\nHuman: and now?", add_special_tokens=False)["input_ids"]
    text, _, clipped = trim_completion(ids2, [eos], ["\n\nHuman:"], tokenizer)
    assert text == "Yes." and not clipped
    text, n, clipped = trim_completion(ids, [eos], ["\n\nHuman:"], tokenizer)
    assert clipped and n == len(ids)


def test_empty_completions_are_dropped_and_counted(tiny, tokenizer):
    # a stop sequence found at position 0 of every completion empties them all
    config = SuperHFConfig(num_generations=3, max_completion_length=4, stop_sequences=[""])
    completions, stats = generate_completions(tiny, tokenizer, ["Hello", "World"], config)
    assert completions == [] and stats.num_empty == 6


def test_stop_ids_include_tokenizer_eos(tiny, tokenizer):
    assert tokenizer.eos_token_id in stop_token_ids(tiny, tokenizer)


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"),
    [(1.0, 0, 0.95), (0.7, 0, 0.5), (1.0, 50, 0.95), (1.3, 7, 1.0)],
)
def test_nucleus_sampler_keeps_the_same_tokens_as_transformers(temperature, top_k, top_p):
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    torch.manual_seed(0)
    # peaked rows (nucleus inside the candidates) and flat rows (the full-sort fallback)
    scores = torch.cat([torch.randn(6, 5000) * 4, torch.randn(2, 5000) * 0.1])
    ids = torch.zeros(8, 1, dtype=torch.long)
    expected = TemperatureLogitsWarper(temperature)(ids, scores.clone())
    if top_k:
        expected = TopKLogitsWarper(top_k)(ids, expected)
    if top_p < 1:
        expected = TopPLogitsWarper(top_p)(ids, expected)
    got = NucleusSampler(temperature, top_k, top_p, candidates=256)(ids, scores.clone())
    assert torch.equal(torch.isfinite(got), torch.isfinite(expected))
    torch.testing.assert_close(got.softmax(-1), expected.softmax(-1))
