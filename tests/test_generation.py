"""Generation: each prompt computed once and shared by its samples; exact sampling; trimming."""

from __future__ import annotations

import pytest
import torch

from superhf.config import SuperHFConfig
from superhf.generation import (
    NucleusSampler,
    generate_completions,
    inverse_cdf_sample,
    stop_token_ids,
    trim_completion,
)
from tests.conftest import make_tiny_llama


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return make_tiny_llama(len(tokenizer)).eval()


def test_each_prompt_is_computed_once_and_shared_by_its_samples(tiny, tokenizer, monkeypatch):
    import superhf.generation

    calls, prompt_rows = [], []
    original = superhf.generation.sample_shared_prompts
    forward = tiny.forward

    def spy(model, prompts, samples, *args):
        calls.append((len(prompts), samples, args[1]))
        return original(model, prompts, samples, *args)

    def spy_forward(*args, **kwargs):
        if kwargs.get("logits_to_keep") == 1:  # the prompt pass
            prompt_rows.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    monkeypatch.setattr(superhf.generation, "sample_shared_prompts", spy)
    monkeypatch.setattr(tiny, "forward", spy_forward)
    config = SuperHFConfig(
        num_generations=4, max_completion_length=6, generation_batch_size=8, stop_sequences=[]
    )
    prompts = ["Hello there", "A much longer prompt about many things", "Hi"]
    completions, stats = generate_completions(tiny, tokenizer, prompts, config)
    # 8 sequences per call / 4 samples = 2 prompts per call, each prompt's pass run once
    assert [(p, s) for p, s, _ in calls] == [(2, 4), (1, 4)]
    assert prompt_rows == [2, 1]
    assert all((s.top_p, s.top_k, s.temperature) == (0.95, 0, 1.0) for _, _, s in calls)
    counts = [sum(c.prompt_index == i for c in completions) for i in range(3)]
    assert sum(counts) + stats.num_empty == 12
    assert stats.num_sampled_tokens > 0 and stats.seconds > 0


def test_decode_loop_matches_transformers_generate_greedily(tiny, tokenizer):
    """Top-k 1 makes sampling greedy: the shared-prompt loop (left padding, shared KV cache,
    positions from the mask) must pick exactly the tokens `generate` picks."""
    from transformers import GenerationConfig

    from superhf.generation import sample_shared_prompts

    texts = ["Hi", "A much longer prompt about many different things", "Tell me more"]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    eos = tokenizer.eos_token_id
    ours = sample_shared_prompts(tiny, encoded, 2, 12, NucleusSampler(1.0, 1, 1.0), [eos], eos)
    tokenizer.padding_side = "left"
    batch = tokenizer.pad({"input_ids": encoded}, return_tensors="pt")
    greedy = GenerationConfig(
        do_sample=False, max_new_tokens=12, pad_token_id=eos, eos_token_id=eos
    )
    theirs = tiny.generate(**batch, generation_config=greedy)[:, batch["input_ids"].shape[1] :]
    for i, row in enumerate(theirs.tolist()):
        expected = row[: row.index(eos) + 1] if eos in row else row
        assert ours[2 * i] == ours[2 * i + 1] == expected


def test_rows_that_stop_leave_the_batch_without_changing_the_others(tokenizer, monkeypatch):
    """Greedy again, with stop tokens picked so that rows end at different steps: the rows
    dropped from the batch (and the KV cache) end where `generate` ends them, and the rows that
    go on pick the same tokens as in `generate`'s full batch."""
    from transformers import DynamicCache, GenerationConfig

    from superhf.generation import sample_shared_prompts

    # Large random weights, so greedy decoding does not pick one token forever.
    tiny = make_tiny_llama(len(tokenizer), initializer_range=1.0).eval()
    texts = [f"Prompt number {i} says {'more ' * i}" for i in range(8)]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    tokenizer.padding_side = "left"
    batch = tokenizer.pad({"input_ids": encoded}, return_tensors="pt")
    pad = tokenizer.eos_token_id

    def greedy(stops: list[int]) -> list[list[int]]:
        config = GenerationConfig(
            do_sample=False, max_new_tokens=16, pad_token_id=pad, eos_token_id=stops or None
        )
        out = tiny.generate(**batch, generation_config=config)
        return out[:, batch["input_ids"].shape[1] :].tolist()

    free = greedy([])
    # Stop tokens: what rows 0-3 pick at steps 2, 4, 6 and 8, so several rows stop early.
    stops = sorted({free[i][2 + 2 * i] for i in range(4)})
    selected = []
    original = DynamicCache.batch_select_indices
    monkeypatch.setattr(
        DynamicCache,
        "batch_select_indices",
        lambda self, idx: (selected.append(len(idx)), original(self, idx))[1],
    )
    ours = sample_shared_prompts(tiny, encoded, 1, 16, NucleusSampler(1.0, 1, 1.0), stops, pad)
    assert selected, "no row was dropped: the test's stop tokens did not stop enough rows"
    for row, theirs in zip(ours, greedy(stops), strict=True):
        end = next((k for k, t in enumerate(theirs) if t in stops), None)
        assert row == (theirs if end is None else theirs[: end + 1])


def test_samples_of_one_prompt_differ_and_stop_at_eos(tiny, tokenizer):
    from superhf.generation import sample_shared_prompts

    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    rows = sample_shared_prompts(tiny, [[1, 2, 3]], 8, 10, NucleusSampler(1.0, 0, 1.0), [eos], eos)
    assert len(rows) == 8 and len({tuple(r) for r in rows}) > 1
    assert all(len(r) <= 10 and eos not in r[:-1] for r in rows)


def test_trim_at_eos_and_turn_delimiters(tokenizer):
    eos = tokenizer.eos_token_id
    ids = tokenizer("Sure, here it is.", add_special_tokens=False)["input_ids"]
    c = trim_completion(ids + [eos] + ids, [eos], [], tokenizer)
    assert c.text == "Sure, here it is." and c.num_tokens == len(ids) + 1 and not c.clipped
    assert c.token_ids == ids + [eos]
    ids2 = tokenizer("Yes.\n\nHuman: and now?", add_special_tokens=False)["input_ids"]
    c = trim_completion(ids2, [eos], ["\n\nHuman:"], tokenizer)
    assert c.text == "Yes." and not c.clipped
    c = trim_completion(ids, [eos], ["\n\nHuman:"], tokenizer)
    assert c.clipped and c.num_tokens == len(ids) and c.token_ids == ids  # no end token


def test_trim_keeps_the_stop_token_that_ended_the_sample(tokenizer):
    """Llama-3 style: several end ids; the one sampled is the one trained on."""
    eos, eot = tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_start|>")
    ids = tokenizer("Fine.", add_special_tokens=False)["input_ids"]
    c = trim_completion(ids + [eot, 5, 6], [eos, eot], [], tokenizer, prompt_index=3)
    assert c.token_ids == ids + [eot] and c.text == "Fine." and c.prompt_index == 3


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
    # peaked rows (nucleus inside the first candidates), flatter rows (inside the second) and
    # flat rows (the full-sort fallback)
    scores = torch.cat(
        [torch.randn(6, 5000) * 4, torch.randn(3, 5000) * 1.5, torch.randn(2, 5000) * 0.1]
    )
    ids = torch.zeros(len(scores), 1, dtype=torch.long)
    expected = TemperatureLogitsWarper(temperature)(ids, scores.clone())
    if top_k:
        expected = TopKLogitsWarper(top_k)(ids, expected)
    if top_p < 1:
        expected = TopPLogitsWarper(top_p)(ids, expected)
    sampler = NucleusSampler(temperature, top_k, top_p, candidates=(64, 1024))
    got = sampler(ids, scores.clone())
    if top_p == 0.95 and not top_k:  # the setting covers all three paths
        sizes = torch.isfinite(got).sum(-1)
        assert (sizes <= 64).any() and ((sizes > 64) & (sizes <= 1024)).any()
        assert (sizes > 1024).any()
    assert torch.equal(torch.isfinite(got), torch.isfinite(expected))
    torch.testing.assert_close(got.softmax(-1), expected.softmax(-1))


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"),
    [(1.0, 0, 0.95), (0.7, 0, 0.5), (1.0, 50, 0.95), (1.3, 7, 1.0), (1.0, 0, 1.0)],
)
def test_sampling_over_candidates_draws_the_full_distributions_token(temperature, top_k, top_p):
    """`sample` (the decode loop's path, over each row's candidates only) draws, for every
    uniform, the token `inverse_cdf_sample` draws from the filtered full-vocabulary logits."""
    torch.manual_seed(1)
    scores = torch.cat(
        [torch.randn(6, 5000) * 4, torch.randn(3, 5000) * 1.5, torch.randn(2, 5000) * 0.1]
    )
    sampler = NucleusSampler(temperature, top_k, top_p, candidates=(64, 1024))
    full = sampler(torch.zeros(len(scores), 1, dtype=torch.long), scores.clone())
    for _ in range(200):
        uniforms = torch.rand(len(scores), dtype=torch.float64)
        drawn = sampler.sample(scores.clone(), uniforms)
        assert torch.equal(drawn, inverse_cdf_sample(full, uniforms))
        assert torch.isfinite(full.gather(1, drawn[:, None])).all()
