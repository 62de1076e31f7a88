"""Reward models, callables and their weighted sum."""

from __future__ import annotations

import sys

import pytest
import torch

from superhf.rewards.scoring import (
    RewardError,
    RewardModel,
    RewardScorer,
    load_reward_func,
    reward_model_text,
)
from tests.conftest import make_tiny_llama


@pytest.fixture(scope="module")
def tiny_reward_model_dir(tmp_path_factory, tokenizer):
    model = make_tiny_llama(len(tokenizer), head="sequence-classification", num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    path = tmp_path_factory.mktemp("tiny-rm")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_reward_model_score_does_not_depend_on_batch_mates(tiny_reward_model_dir):
    rm = load_reward_func(str(tiny_reward_model_dir), batch_size=3)
    assert isinstance(rm, RewardModel)
    prompts = ["Q: short?", "Q: a much longer question with many more tokens in it?", "Q: mid?"]
    completions = [" A.", " A long answer " * 5, " Medium answer."]
    prompts, completions = prompts * 2, completions * 2
    together = rm(prompts, completions)
    alone = [rm([p], [c])[0] for p, c in zip(prompts, completions, strict=True)]
    assert together == pytest.approx(alone, abs=1e-4)
    assert len(set(round(s, 4) for s in together[:3])) == 3  # texts really differ


def test_reward_model_renders_conversations(tiny_reward_model_dir):
    rm = RewardModel(str(tiny_reward_model_dir))
    text = rm.text([{"role": "user", "content": "Hi"}], "Hello!")
    assert "Hi" in text and "Hello!" in text and text.index("Hi") < text.index("Hello!")


def test_reward_model_text_for_each_prompt_form(tokenizer):
    hh = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bread?\n\nAssistant: Use flour."
    prompt, answer = hh[: hh.rindex(":") + 1], " Use flour."
    # HH: one space between the tag and the answer, as in the files, whatever the policy emits.
    for emitted in (answer, answer.lstrip(), "\n" + answer.lstrip()):
        assert reward_model_text(prompt, emitted) == hh
    assert reward_model_text(None, hh) == hh  # an HH transcript: split at its last answer
    assert reward_model_text("Q: 2+2?", " 4") == "Q: 2+2? 4"  # plain strings: TRL's concat
    assert reward_model_text(None, "no turns") == "no turns"
    # Conversations: the chat template, or the HH form when the tokenizer has none.
    conversation = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bread?"},
    ]
    whole = [*conversation, {"role": "assistant", "content": "Use flour."}]
    templated = tokenizer.apply_chat_template(whole, tokenize=False)
    assert reward_model_text(conversation, "Use flour.", tokenizer) == templated
    assert reward_model_text(conversation, whole[-1:], tokenizer) == templated
    assert reward_model_text(None, whole, tokenizer) == templated
    assert reward_model_text(conversation, "Use flour.", None) == hh
    assert reward_model_text(None, whole, None) == hh


def test_reward_model_reads_reward_model_text(tiny_reward_model_dir):
    rm = RewardModel(str(tiny_reward_model_dir))
    prompt = "\n\nHuman: Bread?\n\nAssistant:"
    assert rm.text(prompt, "Use flour.") == reward_model_text(prompt, "Use flour.", rm.tokenizer)
    assert rm([prompt], ["Use flour."]) == pytest.approx(rm([prompt], [" Use flour."]), abs=1e-6)


def test_callable_from_import_path(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def length(prompts, completions, **kw):\n"
        "    return [float(len(c)) for c in completions]\n"
        "class Shout:\n"
        "    def __call__(self, prompts, completions, **kw):\n"
        "        return [float(c.isupper()) for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_reward_func("my_rewards:length")(["p"], ["abc"]) == [3.0]
    assert load_reward_func("my_rewards.Shout")(["p"], ["ABC"]) == [1.0]
    with pytest.raises(RewardError, match="cannot import"):
        load_reward_func("my_rewards:missing")
    sys.modules.pop("my_rewards", None)


def test_callable_imports_from_the_working_directory(tmp_path, monkeypatch):
    """`superhf compare` run from a folder imports its `pkg.module:function` rewards, as the
    configs' `bench.length_reward:target_length` needs: a console script's path lacks it."""
    (tmp_path / "cwd_rewards").mkdir()
    (tmp_path / "cwd_rewards" / "__init__.py").write_text("")
    (tmp_path / "cwd_rewards" / "words.py").write_text(
        "def count(prompts, completions, **kw):\n"
        "    return [float(len(c.split())) for c in completions]\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        assert load_reward_func("cwd_rewards.words:count")(["p"], ["a b c"]) == [3.0]
        with pytest.raises(RewardError, match="cannot import"):
            load_reward_func("no_such_module_here:count")
    finally:
        for name in ("cwd_rewards", "cwd_rewards.words"):
            sys.modules.pop(name, None)


def test_weighted_sum_columns_and_length_penalty():
    def first(prompts, completions, **kw):
        return [1.0] * len(completions)

    def uses_column(prompts, completions, bonus, **kw):
        return bonus

    scorer = RewardScorer([first, uses_column], weights=[2.0, -1.0])
    scores = scorer(["p", "q"], ["a", "bb"], {"bonus": [0.5, 3.0]})
    assert scores.total == [1.5, -1.0]
    assert scores.per_func == {"first": [1.0, 1.0], "uses_column": [0.5, 3.0]}
    penalised = RewardScorer([first], length_penalty=0.5)(["p"], ["a" * 100])
    assert penalised.total[0] == pytest.approx(1.0 - 0.5 * torch.log(torch.tensor(100.0)).item())


def test_bad_reward_outputs_name_the_function():
    def short(prompts, completions, **kw):
        return [0.0]

    def nan(prompts, completions, **kw):
        return [float("nan")] * len(completions)

    def boom(prompts, completions, **kw):
        raise KeyError("oops")

    with pytest.raises(RewardError, match="'short' returned 1 scores for 2"):
        RewardScorer([short])(["p", "q"], ["a", "b"])
    with pytest.raises(RewardError, match="'nan' returned nan for completion 'a'"):
        RewardScorer([nan])(["p"], ["a"])
    with pytest.raises(RewardError, match="'boom' raised"):
        RewardScorer([boom])(["p"], ["a"])
