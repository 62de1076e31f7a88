"""The exact tokens the policy learns from: prompt ids (with the tokenizer's BOS rule), then the
ids that were sampled, through the token that really ended the sample; nothing after a
completion clipped at max_completion_length.
"""

from __future__ import annotations

import collections
import copy
import json

import pytest
import torch
from tokenizers.processors import TemplateProcessing
from typer.testing import CliRunner

import superhf.generation
import superhf.train.update
from superhf.batching import IGNORE_INDEX, build_training_batch, encode_prompt
from superhf.config import SuperHFConfig
from superhf.data import prepare_prompts
from superhf.generation import Completion, generate_completions, trim_completion
from superhf.train.trainer import SuperHFTrainer
from tests.conftest import make_tiny_llama

ROWS = [{"prompt": f"Question {i}: tell me about topic {i}."} for i in range(40)]


def constant_reward(prompts, completions, **kw):
    return [1.0 for _ in completions]


def llama_style(tokenizer):
    """The SmolLM2 tokenizer made to behave like LLaMA's: a BOS (`<|endoftext|>`, id 0) before
    every encoding, and, worse than LLaMA, an EOS after it (which prompts must never get)."""
    tok = copy.deepcopy(tokenizer)
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<|endoftext|> $A <|im_end|>",
        special_tokens=[("<|endoftext|>", 0), ("<|im_end|>", tokenizer.eos_token_id)],
    )
    tok.bos_token = "<|endoftext|>"
    assert tok("Hi")["input_ids"][0] == tok.bos_token_id == 0
    return tok


class Spy:
    """Records the arguments and results of a function while calling it unchanged."""

    def __init__(self, function):
        self.function, self.calls = function, []

    def __call__(self, *args, **kwargs):
        result = self.function(*args, **kwargs)
        self.calls.append((args, kwargs, result))
        return result


# --- one function encodes prompts ----------------------------------------------------------


def test_encode_prompt_adds_one_leading_bos_and_never_an_eos(tokenizer):
    bos_tokenizer = llama_style(tokenizer)
    text = "\n\nHuman: Hello there\n\nAssistant:"
    plain = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert encode_prompt(bos_tokenizer, text) == [0, *plain]
    # a chat template that already wrote the BOS: still exactly one
    assert encode_prompt(bos_tokenizer, "<|endoftext|>" + text) == [0, *plain]
    # SmolLM2 adds no special tokens: nothing changes, chat template or not
    assert encode_prompt(tokenizer, text) == plain
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert encode_prompt(tokenizer, chat) == tokenizer(chat, add_special_tokens=False)["input_ids"]


def test_generation_and_length_check_see_the_bos(tokenizer, monkeypatch):
    bos_tokenizer = llama_style(tokenizer)
    model = make_tiny_llama(len(tokenizer))
    spy = Spy(superhf.generation.sample_shared_prompts)
    monkeypatch.setattr(superhf.generation, "sample_shared_prompts", spy)
    config = SuperHFConfig(num_generations=2, max_completion_length=3, stop_sequences=[])
    generate_completions(model, bos_tokenizer, ["Hello there"], config)
    plain = tokenizer("Hello there", add_special_tokens=False)["input_ids"]
    assert spy.calls[0][0][1] == [[0, *plain]]
    # A prompt of exactly max_prompt_length tokens fits without BOS, not with it.
    length = len(plain)
    kept, _ = prepare_prompts([{"prompt": "Hello there"}], tokenizer, length)
    assert len(kept) == 1
    with pytest.raises(Exception, match="no usable prompts"):
        prepare_prompts([{"prompt": "Hello there"}], bos_tokenizer, length)


# --- completions carry their sampled ids -----------------------------------------------------


def test_completions_keep_the_sampled_ids_through_the_stop_token(tokenizer, monkeypatch):
    model = make_tiny_llama(len(tokenizer))
    prompts = [r["prompt"] for r in ROWS[:6]]
    config = SuperHFConfig(num_generations=4, max_completion_length=6, top_k=3, stop_sequences=[])
    torch.manual_seed(0)
    probe, _ = generate_completions(model, tokenizer, prompts, config)
    stop = _frequent_token(probe)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, stop]
    spy = Spy(superhf.generation.sample_shared_prompts)
    monkeypatch.setattr(superhf.generation, "sample_shared_prompts", spy)
    torch.manual_seed(0)
    completions, _ = generate_completions(model, tokenizer, prompts, config)
    sampled = {tuple(row) for _, _, rows in spy.calls for row in rows}
    assert completions and all(tuple(c.token_ids) in sampled for c in completions)
    for c in completions:
        assert c.clipped == (len(c.token_ids) == 6 and c.token_ids[-1] != stop)
        assert c.num_tokens == len(c.token_ids)
        words = c.token_ids if c.clipped else c.token_ids[:-1]
        assert c.text == tokenizer.decode(words, skip_special_tokens=True).rstrip()
    assert any(c.token_ids[-1] == stop for c in completions), "no sample ended on the 2nd stop"
    assert any(c.clipped for c in completions), "no sample was clipped"


def test_stop_sequence_trains_through_the_token_that_completes_it(tokenizer):
    eos = tokenizer.eos_token_id
    ids = tokenizer("Yes.\n\nHuman: and now?", add_special_tokens=False)["input_ids"]
    c = trim_completion(ids + [eos], [eos], ["\n\nHuman:", "\n\nAssistant:"], tokenizer)
    assert c.text == "Yes." and not c.clipped
    assert c.token_ids == ids[: len(c.token_ids)]
    assert tokenizer.decode(c.token_ids) == "Yes.\n\nHuman:"
    assert c.num_tokens == len(ids) + 1  # what was sampled, for the length metrics


def _frequent_token(completions: list[Completion]) -> int:
    """The token sampled most often after the first position: a stop token that ends some
    samples after a word or two (and rarely empties one)."""
    later = collections.Counter(t for c in completions for t in c.token_ids[1:])
    first = collections.Counter(c.token_ids[0] for c in completions)
    # a token that also starts samples would mostly end them empty (dropped before training)
    return max(later, key=lambda t: (later[t] - 4 * first[t], -t))


# --- fine_tune trains on them ----------------------------------------------------------------


def _trainer(tmp_path, tokenizer, model=None, **overrides) -> SuperHFTrainer:
    values = dict(
        num_generations=4,
        max_completion_length=6,
        prompts_per_iteration=4,
        max_iterations=2,
        per_device_train_batch_size=2,
        top_k=3,
        use_peft=False,
        beta=0.1,
        stop_sequences=[],
        num_eval_prompts=0,
        eval_on_start=False,
        output_dir=str(tmp_path / "run"),
        seed=0,
    )
    return SuperHFTrainer(
        model=model if model is not None else make_tiny_llama(len(tokenizer)),
        reward_funcs=constant_reward,
        args=SuperHFConfig(**{**values, **overrides}),
        processing_class=tokenizer,
        train_dataset=ROWS,
    )


def _trained_rows(spy: Spy) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) of every row build_training_batch was given, checked
    against the batch it built: the inputs are exactly prompt + completion, the labels exactly
    the completion."""
    rows = []
    for args, _, batch in spy.calls:
        for i, (p, c) in enumerate(zip(args[0], args[1], strict=True)):
            real = batch.input_ids[i][batch.attention_mask[i].bool()].tolist()
            assert real == p + c
            assert batch.labels[i][batch.labels[i] != IGNORE_INDEX].tolist() == c
            rows.append((p, c))
    return rows


@pytest.mark.parametrize("mask_truncated", [False, True])
def test_fine_tune_trains_on_the_sampled_ids(tmp_path, tokenizer, monkeypatch, mask_truncated):
    trainer = _trainer(tmp_path, tokenizer, mask_truncated_completions=mask_truncated)
    spy = Spy(build_training_batch)
    monkeypatch.setattr(superhf.train.update, "build_training_batch", spy)
    eos = tokenizer.eos_token_id
    # " H" + "ello": text that re-tokenizes to other ids (" Hello"); the sampled ids count.
    odd = tokenizer.convert_tokens_to_ids(["ĠH", "ello", "Ġworld"])
    assert tokenizer(" Hello world", add_special_tokens=False)["input_ids"] != odd
    samples = [
        Completion(0, "Hello world", 4, False, token_ids=[*odd, eos]),
        Completion(1, "Hello world", 3, True, token_ids=odd),  # clipped: no end token
    ]
    prompts = trainer.prompts[:2]
    metrics = trainer.fine_tune(samples, prompts)
    assert metrics["num_masked_truncated"] == (1 if mask_truncated else 0)
    prompt_ids = [tokenizer(p.text, add_special_tokens=False)["input_ids"] for p in prompts]
    expected = [(prompt_ids[0], [*odd, eos])]
    if not mask_truncated:
        expected.append((prompt_ids[1], odd))
    assert _trained_rows(spy) == expected


def test_completions_from_text_alone_still_train(tmp_path, tokenizer, monkeypatch):
    """Completions built by hand (no token_ids): their text, plus EOS unless clipped."""
    trainer = _trainer(tmp_path, tokenizer)
    spy = Spy(build_training_batch)
    monkeypatch.setattr(superhf.train.update, "build_training_batch", spy)
    eos = tokenizer.eos_token_id
    trainer.fine_tune(
        [Completion(0, "Hi there", 3, False), Completion(0, "Hi", 1, True)], trainer.prompts[:1]
    )
    words = tokenizer("Hi there", add_special_tokens=False)["input_ids"]
    assert [c for _, c in _trained_rows(spy)] == [
        [*words, eos],
        tokenizer("Hi", add_special_tokens=False)["input_ids"],
    ]


# --- the path a user takes -------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_style_model_dir(tmp_path_factory, tokenizer):
    """A model folder like a Llama-3 one: the tokenizer adds a BOS, and generation stops on two
    ids (the tokenizer's EOS and another, here a token the tiny model samples often)."""
    bos_tokenizer = llama_style(tokenizer)
    model = make_tiny_llama(len(tokenizer))
    config = SuperHFConfig(num_generations=4, max_completion_length=6, top_k=3, stop_sequences=[])
    torch.manual_seed(0)
    # probed as training will sample: the same prompts, encoded with the BOS
    probe, _ = generate_completions(model, bos_tokenizer, [r["prompt"] for r in ROWS], config)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, _frequent_token(probe)]
    path = tmp_path_factory.mktemp("llama-style")
    model.save_pretrained(path)
    bos_tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("folder", ["tiny_model_dir", "llama_style_model_dir"])
@pytest.mark.parametrize("mask_truncated", [False, True])
def test_superhf_train_trains_on_prompt_and_sampled_ids(
    tmp_path, folder, mask_truncated, request, monkeypatch
):
    from transformers import AutoTokenizer, GenerationConfig

    from superhf.cli import app

    model_dir = request.getfixturevalue(folder)
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    config = tmp_path / "config.yaml"
    config.write_text("stop_sequences: []\n")
    sampled = Spy(superhf.generation.sample_shared_prompts)
    trained = Spy(build_training_batch)
    monkeypatch.setattr(superhf.generation, "sample_shared_prompts", sampled)
    monkeypatch.setattr(superhf.train.update, "build_training_batch", trained)
    args = [
        "train",
        "--config", str(config),
        "--model_name_or_path", str(model_dir),
        "--dataset_name", str(data),
        "--reward_funcs", "tests.train.test_training_tokens:constant_reward",
        "--num_generations", "4",
        "--num_kept_per_prompt", "4",  # every sample trained: each way of ending shows up
        "--max_completion_length", "6",
        "--top_k", "3",
        "--prompts_per_iteration", "4",
        "--max_iterations", "2",
        "--use_peft", "false",
        "--num_eval_prompts", "0",
        "--output_dir", str(tmp_path / "run"),
    ]  # fmt: skip
    if mask_truncated:  # the default (False) is what a plain run gets
        args += ["--mask_truncated_completions", "true"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ends = GenerationConfig.from_pretrained(model_dir).eos_token_id
    stops = {*([ends] if isinstance(ends, int) else ends), tokenizer.eos_token_id}
    bos = [0] if folder == "llama_style_model_dir" else []
    prompt_ids = [bos + tokenizer(r["prompt"], add_special_tokens=False)["input_ids"] for r in ROWS]
    # what the model was asked to continue, and what it sampled (through the stop token)
    samples = set()
    for args_, _, rows in sampled.calls:
        prompts, n = args_[1], args_[2]
        assert all(p in prompt_ids for p in prompts)
        samples |= {(tuple(prompts[i // n]), tuple(row)) for i, row in enumerate(rows)}
    rows = _trained_rows(trained)
    if not mask_truncated:
        # iterations x prompts x samples, all kept, less the empty ones (dropped before scoring)
        assert 2 * 4 * 2 < len(rows) <= 2 * 4 * 4
    for p, c in rows:
        assert (tuple(p), tuple(c)) in samples  # exactly a sampled sequence
        assert c[-1] in stops or (len(c) == 6 and not set(c) & stops)
        assert not (mask_truncated and c[-1] not in stops)
    ended = [c[-1] for _, c in rows if c[-1] in stops]
    if folder == "llama_style_model_dir":
        assert set(ended) - {tokenizer.eos_token_id}, "no trained sample ended on the 2nd stop id"
    if not mask_truncated:
        assert any(c[-1] not in stops for _, c in rows), "no clipped sample was trained on"
