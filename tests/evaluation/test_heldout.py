"""Held-out evaluation: pure metrics, the k1 KL estimate, config checks, `superhf eval` end to end.

Everything runs on the tiny random Llama (conftest), with Python rewards instead of the
embedded reward model, so the file stays fast.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import yaml
from typer.testing import CliRunner

from superhf.cli import app
from superhf.config import ConfigError, EvalConfig, parse_eval_args
from superhf.data import prepare_prompts
from superhf.evaluation.evaluate import summarize
from superhf.evaluation.heldout import distinct_n, generate_and_score, mean_se
from superhf.evaluation.kl import KL_ESTIMATOR, KLEstimate, kl_estimate
from superhf.files import json_safe
from superhf.generation import Completion
from superhf.models import inspect_model, load_policy, reference_name
from superhf.rewards.scoring import RewardScorer
from tests.conftest import make_tiny_llama


def length_reward(prompts, completions, **kw):
    return [len(c) / 40 for c in completions]


def word_count_reward(prompts, completions, **kw):
    return [float(len(c.split())) for c in completions]


# --- pure metrics ---------------------------------------------------------------------------


def test_distinct_n_known_answers():
    assert distinct_n(["a b a b"], 1) == 0.5  # {a, b} of 4 words
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # ab, ba, ab
    assert distinct_n(["a b", "a b"], 2) == 0.5  # the same bigram in two answers
    assert distinct_n(["x y", "y z"], 2) == 1.0  # n-grams do not cross answers ("y y")
    assert distinct_n(["The the"], 1) == 1.0  # case is kept
    assert math.isnan(distinct_n(["a", "b"], 2))
    with pytest.raises(ValueError):
        distinct_n(["a"], 0)


def test_mean_se():
    stats = mean_se([1.0, 2.0, 3.0])
    assert stats["mean"] == 2.0 and stats["std"] == 1.0 and stats["n"] == 3
    assert stats["se"] == pytest.approx(1 / math.sqrt(3))
    assert mean_se([5.0])["se"] is None
    assert mean_se([])["mean"] is None


# --- the k1 KL estimate ---------------------------------------------------------------------


def _hand_log_prob(model, prompt_ids, completion_ids):
    """sum of log p(completion token) over the completion, one unpadded sequence at a time."""
    ids = prompt_ids + completion_ids
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    return sum(float(logp[t - 1, ids[t]]) for t in range(len(prompt_ids), len(ids)))


def test_kl_estimate_matches_hand_computation(tokenizer):
    policy, reference = make_tiny_llama(len(tokenizer), seed=0), make_tiny_llama(len(tokenizer), 1)
    prompts = ["Hello there, how are you?", "Tell me a story about a long, long road."]
    completions = [
        Completion(0, "I am fine.", 4, clipped=False),
        Completion(1, "Once upon a time there was a road", 9, clipped=True),
        Completion(1, "No.", 2, clipped=False),
    ]
    # batch_size 2: one padded batch of two lengths, one batch alone.
    est = kl_estimate(policy, reference, tokenizer, prompts, completions, batch_size=2)
    eos = tokenizer.eos_token_id
    for i, c in enumerate(completions):
        p = tokenizer(prompts[c.prompt_index], add_special_tokens=False)["input_ids"]
        y = tokenizer(c.text, add_special_tokens=False)["input_ids"] + ([] if c.clipped else [eos])
        expected = _hand_log_prob(policy, p, y) - _hand_log_prob(reference, p, y)
        assert est.per_sequence[i] == pytest.approx(expected, abs=1e-4)
        assert est.num_tokens[i] == len(y)
    summary = est.to_dict()
    assert summary["estimator"] == KL_ESTIMATOR
    assert summary["per_sequence"]["mean"] == pytest.approx(sum(est.per_sequence) / 3)


def test_kl_estimate_scores_the_sampled_ids_and_their_end_token(tokenizer):
    """Not the text re-tokenized (" H" + "ello" would become " Hello"), not the tokenizer's EOS
    when another end id ended the sample; the prompt with the BOS a LLaMA-style tokenizer adds."""
    from tests.train.test_training_tokens import llama_style

    bos_tokenizer = llama_style(tokenizer)
    policy, reference = make_tiny_llama(len(tokenizer), seed=0), make_tiny_llama(len(tokenizer), 1)
    odd = tokenizer.convert_tokens_to_ids(["ĠH", "ello", "Ġworld"])
    eot = tokenizer.convert_tokens_to_ids("<|im_start|>")  # a second end id, as Llama-3's
    completions = [
        Completion(0, "Hello world", 4, clipped=False, token_ids=[*odd, eot]),
        Completion(0, "Hello world", 3, clipped=True, token_ids=odd),
    ]
    prompt = "Say hello."
    est = kl_estimate(policy, reference, bos_tokenizer, [prompt], completions, batch_size=2)
    p = [0, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    for i, y in enumerate([[*odd, eot], odd]):
        expected = _hand_log_prob(policy, p, y) - _hand_log_prob(reference, p, y)
        assert est.per_sequence[i] == pytest.approx(expected, abs=1e-4)
        assert est.num_tokens[i] == len(y)


def _sampled(model, tokenizer, prompts, n=4, length=8):
    from superhf.evaluation.heldout import sample_completions

    config = EvalConfig(
        num_generations=n, max_completion_length=length, temperature=1.0, top_p=1.0, top_k=0
    )
    torch.manual_seed(0)
    return sample_completions(model, tokenizer, prompts, config)


PROMPTS = [f"Question {i}: what do you think about topic {i}?" for i in range(6)]


def test_kl_is_zero_for_same_weights_and_fresh_adapter(tokenizer):
    from peft import LoraConfig, get_peft_model

    model = make_tiny_llama(len(tokenizer), seed=0)
    completions = _sampled(model, tokenizer, PROMPTS)
    same = kl_estimate(model, copy.deepcopy(model), tokenizer, PROMPTS, completions)
    assert max(abs(v) for v in same.per_sequence) < 1e-5

    policy = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    fresh = kl_estimate(policy, policy, tokenizer, PROMPTS, completions)  # B = 0 at init
    assert max(abs(v) for v in fresh.per_sequence) < 1e-5

    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 2.0)
    moved = _sampled(policy, tokenizer, PROMPTS)
    est = kl_estimate(policy, policy, tokenizer, PROMPTS, moved)
    assert est.to_dict()["per_sequence"]["mean"] > 0.05


def test_kl_is_positive_for_different_models(tokenizer):
    # Larger initial weights make the policy's next-token distributions peaked, the
    # reference's stay near uniform: KL(pi || pi_ref) per token is then far from 0.
    policy = make_tiny_llama(len(tokenizer), 0, initializer_range=0.3)
    reference = make_tiny_llama(len(tokenizer), 1)
    completions = _sampled(policy, tokenizer, PROMPTS)
    stats = kl_estimate(policy, reference, tokenizer, PROMPTS, completions).to_dict()
    assert stats["per_sequence"]["mean"] > 4 * stats["per_sequence"]["se"] > 0
    assert stats["per_token"]["mean"] > 0.1


# --- schema ---------------------------------------------------------------------------------


def test_summary_schema_is_json_with_nulls():
    kl = KLEstimate([0.5, 1.5], [2, 3])
    summary = summarize(
        ["a b c", "a b d"], [4, 5], [False, True], [1.0, 2.0], None, kl, meteor=None
    )
    assert set(summary) >= {
        "num_completions",
        "reward",
        "test_reward",
        "meteor",
        "kl",
        "length",
        "distinct_1",
        "distinct_2",
    }
    assert summary["test_reward"] is None and summary["meteor"] is None
    assert summary["reward"]["mean"] == 1.5
    assert summary["kl"]["per_token"]["mean"] == pytest.approx((0.25 + 0.5) / 2)
    assert summary["length"] == {"mean_tokens": 4.5, "mean_words": 3.0, "clipped_fraction": 0.5}
    assert summary["distinct_1"] == pytest.approx(4 / 6)
    text = json.dumps(json_safe({**summary, "x": float("nan")}), allow_nan=False)
    assert json.loads(text)["x"] is None


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--num_prompts", "0"], "num_prompts"),
        (["--top_p", "1.5"], "top_p"),
        (["--temperature", "0"], "temperature"),
        (["--meteor_pairs", "-1"], "meteor_pairs"),
        (["--reward_weights", "1", "2"], "reward_weights"),
        (["--num_generations", "8", "--generation_batch_size", "4"], "generation_batch_size"),
        (["--tempreature", "1"], "did you mean 'temperature'"),
        (["--kl_batch_size", "0"], "kl_batch_size"),
    ],
)
def test_bad_values_name_the_field(flags, field):
    with pytest.raises(ConfigError, match=field):
        parse_eval_args(["some/model", *flags])


def test_models_come_before_flags():
    models, config = parse_eval_args(["a", "b", "--num_prompts", "3"])
    assert models == ["a", "b"] and config.num_prompts == 3
    assert config.temperature == 0.7 and config.top_p == 0.95 and config.top_k == 0
    with pytest.raises(ConfigError, match="MODEL_OR_RUN_DIR"):
        parse_eval_args(["--num_prompts", "3"])


@pytest.fixture
def no_model_loads(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a model loaded before the settings were checked")

    monkeypatch.setattr("superhf.models.load_model", fail)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tiny}", "--top_p", "2"], "top_p must be in (0, 1]"),
        (["{tmp}/nope", "--num_prompts", "2"], "no such folder"),
        (["{tmp}"], "neither a model folder"),
        (["{tiny}", "--reference_model", "{tmp}/missing"], "reference_model: no such folder"),
        (["{tiny}", "--reward_funcs", "tests.evaluation.test_heldout:nope"], "cannot import"),
    ],
)
def test_cli_errors_before_any_model_loads(args, message, tmp_path, tiny_model_dir, no_model_loads):
    args = [a.format(tiny=tiny_model_dir, tmp=tmp_path) for a in args]
    result = CliRunner().invoke(app, ["eval", *args, "--output_dir", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output.replace("\n", " ")
    assert "Traceback" not in result.output


# --- model loading --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter_run(tmp_path_factory, tiny_model_dir, tokenizer):
    """A `superhf train` LoRA run folder: adapter (moved away from init), tokenizer, config."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = tmp_path_factory.mktemp("lora-run")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    policy = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 2.0)
    policy.save_pretrained(run)
    tokenizer.save_pretrained(run)
    config = {"model_name_or_path": str(tiny_model_dir), "use_peft": True, "beta": 0.35}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.jsonl").write_text(json.dumps({"iteration": 1, "reward": 0.1}) + "\n")
    return run


def test_inspect_and_reference(tmp_path, tiny_model_dir, adapter_run):
    spec = inspect_model(str(adapter_run))
    assert spec.kind == "adapter" and spec.base_model == str(tiny_model_dir)
    assert reference_name(spec, None)[0] is None  # the adapter disabled, not a second model
    full = inspect_model(str(tiny_model_dir))
    assert full.kind == "full" and reference_name(full, None)[0] is None
    assert "reference_model" in reference_name(full, None)[1]
    assert reference_name(full, "ref")[0] == "ref"
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model_name_or_path": "base"}))
    assert reference_name(inspect_model(str(tmp_path)), None)[0] == "base"


def test_load_policy_adapter_and_full_run(tmp_path, tiny_model_dir, adapter_run, tokenizer):
    from peft import PeftModel

    model, tok, reference, name = load_policy(str(adapter_run))
    assert isinstance(model, PeftModel) and reference is model
    assert name == adapter_run.name and len(tok) == len(tokenizer)
    # A full-model run folder: its reference is the run's model_name_or_path.
    run = tmp_path / "full-run"
    make_tiny_llama(len(tokenizer), seed=5).save_pretrained(run)
    tokenizer.save_pretrained(run)
    (run / "config.yaml").write_text(yaml.safe_dump({"model_name_or_path": str(tiny_model_dir)}))
    model, _, reference, _ = load_policy(str(run))
    assert reference is not None and reference is not model
    assert not torch.equal(model.lm_head.weight, reference.lm_head.weight)


# --- end to end -----------------------------------------------------------------------------


def test_eval_two_models_one_table(tmp_path, tiny_model_dir, adapter_run, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "eval"
    args = [
        "eval",
        str(tiny_model_dir),
        str(adapter_run),
        "--num_prompts",
        "5",
        "--max_completion_length",
        "6",
        "--reward_funcs",
        "tests.evaluation.test_heldout:length_reward",
        "--test_reward_model",
        "tests.evaluation.test_heldout:word_count_reward",
        "--meteor_pairs",
        "20",
        "--output_dir",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("superhf eval") == 1  # one table for both models
    report = json.loads((out / "eval.json").read_text())
    assert report["settings"]["kl_estimator"] == KL_ESTIMATOR
    assert report["settings"]["temperature"] == 0.7
    names = [tiny_model_dir.name, adapter_run.name]
    assert list(report["models"]) == names
    for name in names:
        assert name in result.output
        m = report["models"][name]
        assert m["num_prompts"] == 5 and m["num_completions"] >= 4
        assert m["reward"]["mean"] > 0 and m["test_reward"]["mean"] > 0
        assert 0 <= m["meteor"]["ci_low"] <= m["meteor"]["mean"] <= m["meteor"]["ci_high"]
        assert 0 < m["distinct_1"] <= 1 and m["length"]["mean_tokens"] <= 6
        rows = [json.loads(line) for line in (out / m["completions_file"]).read_text().splitlines()]
        assert len(rows) == m["num_completions"]
        for row in rows:
            assert set(row) >= {"prompt", "completion", "model", "reward", "test_reward"}
            assert row["model"] == name and isinstance(row["prompt"], str)
            assert row["reward"] == pytest.approx(len(row["completion"]) / 40)
            assert row["test_reward"] == float(len(row["completion"].split()))
    full, adapter = (report["models"][n]["kl"] for n in names)
    assert full["per_sequence"] is None and "reference_model" in full["reason"]
    assert "KL not measured" in result.output
    assert adapter["reason"] is None and "adapter disabled" in adapter["reference"]
    assert adapter["per_sequence"]["n"] == report["models"][names[1]]["num_completions"]
    assert math.isfinite(adapter["per_token"]["mean"])
    # the exact KL: one answer per prompt from the policy itself, untempered and untruncated
    exact = report["models"][names[1]]["kl_exact"]
    assert exact["sampling"] == {"temperature": 1.0, "top_p": 1.0, "top_k": 0}
    assert exact["num_answers"] == 5 and exact["per_token"]["mean"] >= 0
    assert "vocabulary" in exact["estimator"] and "exact KL/tok" in result.output
    assert report["models"][names[0]]["kl_exact"]["per_token"] is None


def test_generate_and_score_repeats_and_keeps_training_rng(tokenizer):
    model = make_tiny_llama(len(tokenizer), seed=0)
    prompts, _ = prepare_prompts([{"prompt": p} for p in PROMPTS], tokenizer, 64)
    config = EvalConfig(max_completion_length=6)
    scorer = RewardScorer([length_reward])
    torch.manual_seed(123)
    first = generate_and_score(model, tokenizer, prompts, config, scorer, meteor_pairs=10)
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after)  # the training stream is untouched
    second = generate_and_score(model, tokenizer, prompts, config, scorer, meteor_pairs=10)
    assert first == pytest.approx(second, nan_ok=True)
    for key in ("reward", "test_reward", "meteor", "meteor_ci_low", "meteor_ci_high"):
        assert key in first
    assert math.isnan(first["test_reward"]) and first["reward"] > 0
    assert first["meteor_ci_low"] <= first["meteor"] <= first["meteor_ci_high"]
    assert 0 < first["mean_length"] <= 6


def test_eval_help_lists_grouped_settings():
    result = CliRunner().invoke(app, ["eval", "--help"])
    assert result.exit_code == 0
    for text in ("MODEL_OR_RUN_DIR", "--reference_model", "--meteor_pairs", "generation:"):
        assert text in result.output


def test_meteor_pairs_only_prompts_of_the_same_source_dataset():
    # Prompt i of "a/..." and prompt i of "b/..." got the same answer; within a dataset no two
    # answers share a word. Pairs across datasets would score ~1.
    from superhf.data import Prompt
    from superhf.evaluation.heldout import meteor_across_prompts

    answers = [f"alpha{i} beta{i} gamma{i} delta{i}" for i in range(4)] * 2
    sources = ["a/one", "a/two", "a/one", "a/two", "b/x", "b/x", "b/y", "b/y"]
    prompts = [Prompt(f"q{i}", f"q{i}", {"source": s}) for i, s in enumerate(sources)]
    completions = [Completion(i, text, 4, False) for i, text in enumerate(answers)]
    within = meteor_across_prompts(completions, 100, 0, prompts)
    assert within.num_pairs == 2 * 6  # C(4, 2) per dataset; the part after "/" is ignored
    assert within.mean == 0.0
    assert meteor_across_prompts(completions, 100, 0).mean > 0  # without sources the datasets mix
    no_column = [Prompt(f"q{i}", f"q{i}") for i in range(8)]
    assert meteor_across_prompts(completions, 100, 0, no_column).num_pairs == 28


def test_eval_renders_each_run_as_it_was_trained(
    tmp_path, tiny_model_dir, adapter_run, monkeypatch
):
    """A run trained with apply_chat_template is evaluated with it (its config.yaml says so),
    a plain model without; an explicit --apply_chat_template wins for every model."""
    import shutil

    from superhf.evaluation import evaluate

    run = tmp_path / "templated-run"
    shutil.copytree(adapter_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "apply_chat_template": True}))
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"How do I fix {i}?"}) + "\n" for i in range(2)))
    seen: list[list[str]] = []
    real = evaluate.sample_completions

    def spy(model, tokenizer, texts, config, **kwargs):
        seen.append(list(texts))
        return real(model, tokenizer, texts, config, **kwargs)

    monkeypatch.setattr(evaluate, "sample_completions", spy)
    common = [
        "--dataset_name", str(data), "--dataset_split", "train", "--num_prompts", "2",
        "--max_completion_length", "2", "--reward_funcs",
        "tests.evaluation.test_heldout:length_reward", "--meteor_pairs", "0",
    ]  # fmt: skip
    out = tmp_path / "eval"
    args = ["eval", str(tiny_model_dir), str(run), *common, "--output_dir", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    plain, templated, own = seen  # own: the adapter's answers for its exact KL
    assert plain[0] == "How do I fix 0?" and templated[0].startswith("<|im_start|>")
    assert own == templated  # the exact KL reads the prompts the run was trained on
    models = json.loads((out / "eval.json").read_text())["models"]
    assert [m["apply_chat_template"] for m in models.values()] == [False, True]

    seen.clear()
    args = ["eval", str(run), *common, "--apply_chat_template", "false", "--output_dir", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert seen[0][0] == "How do I fix 0?"
