"""Prompt loading: the accepted forms, the counted drops, and clear errors."""

from __future__ import annotations

import copy
import json

import pytest

from superhf.data import (
    DatasetError,
    embedded_prompts,
    first_human_turn,
    load_prompt_dataset,
    prepare_prompts,
)


def test_string_conversation_and_hh_forms(tokenizer):
    rows = [
        {"prompt": "Plain text prompt:", "topic": "a"},
        {"prompt": [{"role": "user", "content": "Hi, who are you?"}], "topic": "b"},
    ]
    prompts, stats = prepare_prompts(rows, tokenizer, 256)
    assert prompts[0].text == "Plain text prompt:" and prompts[0].columns == {"topic": "a"}
    assert "<|im_start|>user\nHi, who are you?<|im_end|>" in prompts[1].text
    assert prompts[1].text.endswith("<|im_start|>assistant\n")
    assert stats.num_kept == 2

    hh = [{"chosen": "\n\nHuman: How do I bake bread?\n\nAssistant: Use flour.\n\nHuman: ok"}]
    prompts, _ = prepare_prompts(hh, tokenizer, 256)
    assert prompts[0].prompt == "\n\nHuman: How do I bake bread?\n\nAssistant:"
    assert prompts[0].text == "\n\nHuman: How do I bake bread?\n\nAssistant:"
    assert first_human_turn("no turns here") is None


def test_apply_chat_template_renders_plain_strings_as_a_user_message(tokenizer):
    rows = [{"prompt": "What is the capital of France?"}]
    as_is, _ = prepare_prompts(rows, tokenizer, 256)
    assert as_is[0].text == "What is the capital of France?"  # TRL's convention, the default
    templated, _ = prepare_prompts(rows, tokenizer, 256, apply_chat_template=True)
    message = [{"role": "user", "content": "What is the capital of France?"}]
    expected = tokenizer.apply_chat_template(message, tokenize=False, add_generation_prompt=True)
    assert templated[0].text == expected and expected.endswith("<|im_start|>assistant\n")
    assert templated[0].prompt == "What is the capital of France?"  # rewards see the string
    hh = [{"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello."}]  # HH keeps the paper's format
    assert prepare_prompts(hh, tokenizer, 256, apply_chat_template=True)[0][0].text == (
        "\n\nHuman: Hi?\n\nAssistant:"
    )


def test_apply_chat_template_without_a_template_is_a_clear_error(tokenizer):
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    with pytest.raises(DatasetError, match="apply_chat_template.*no chat template"):
        prepare_prompts([{"prompt": "Hi?"}], plain, 256, apply_chat_template=True)


def test_empty_and_too_long_prompts_are_dropped_and_counted(tokenizer):
    rows = [{"prompt": "ok"}, {"prompt": ""}, {"prompt": None}, {"prompt": "word " * 300}]
    prompts, stats = prepare_prompts(rows, tokenizer, max_prompt_length=50)
    assert [p.prompt for p in prompts] == ["ok"]
    assert (stats.num_rows, stats.num_empty, stats.num_too_long) == (4, 2, 1)


def test_missing_column_and_nothing_usable_are_clear(tokenizer):
    with pytest.raises(DatasetError, match=r"no `prompt` column \(columns: \['question'\]\)"):
        prepare_prompts([{"question": "x"}], tokenizer, 256)
    with pytest.raises(DatasetError, match="no usable prompts"):
        prepare_prompts([{"prompt": "  "}], tokenizer, 256)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_local_files(tmp_path, suffix):
    rows = [{"prompt": "first"}, {"prompt": "second"}]
    path = tmp_path / f"prompts{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        from datasets import Dataset

        ds = Dataset.from_list(rows)
        ds.to_csv(path) if suffix == ".csv" else ds.to_parquet(path)
    assert load_prompt_dataset(str(path))["prompt"] == ["first", "second"]


def test_missing_or_unreadable_file(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load_prompt_dataset(str(tmp_path / "nope.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{not json\n')
    with pytest.raises(DatasetError, match="line 2 of .* is not valid JSON"):
        load_prompt_dataset(str(bad))


def test_embedded_prompts_are_real_and_conversational():
    ds = embedded_prompts("all")
    assert len(ds) > 1500  # 1,561 distinct prompts
    sources = {s.split("/")[0] for s in ds["source"]}
    assert sources == {"donotanswer", "realtoxicityprompts"}
    assert ds[0]["prompt"][0]["role"] == "user"


def test_embedded_test_split_is_held_out_from_train():
    train, test = embedded_prompts("train"), embedded_prompts("test")
    texts = lambda d: {m[0]["content"] for m in d["prompt"]}  # noqa: E731
    assert len(train) + len(test) == len(embedded_prompts("all"))
    assert 120 < len(test) < 200  # 149
    assert {s.split("/")[0] for s in test["source"]} == {"donotanswer", "realtoxicityprompts"}
    assert not texts(train) & texts(test)
