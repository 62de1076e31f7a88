"""The whole `superhf compare` harness on a tiny random model, every method for a step or two:
equal sampled-token budgets, eval prompts never trained on, results.json and the plots
written, TRL methods skipped (and recorded) without TRL, and a stopped comparison resumed
without redoing finished runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from superhf.compare.config import CompareConfig
from superhf.compare.harness import run_comparison
from superhf.compare.task import prompt_key

BUDGET = 30
STEP_TOKENS = 2 * 2 * 6  # prompts_per_step x num_generations x max_completion_length


def _hh_rows() -> list[dict[str, str]]:
    rows = []
    for i in range(40):
        question = f"How do I fix problem number {i % 25}?"  # rows 25-39 repeat rows 0-14
        rows.append(
            {
                "chosen": f"\n\nHuman: {question}\n\nAssistant: Try step {i}, then check it.",
                "rejected": f"\n\nHuman: {question}\n\nAssistant: No.",
            }
        )
    return rows


@pytest.fixture(scope="module")
def comparison(tmp_path_factory, tiny_model_dir):
    # One thread: on a shared 2-core CPU, two torch threads made the tiny model's decoding
    # about 6x slower (measured 16 s vs 2.6 s for the same 12 tokens under load).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("compare")
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _hh_rows()), encoding="utf-8")
    cfg = CompareConfig(
        model_name_or_path=str(tiny_model_dir),
        dataset_name=str(data),
        dataset_train_split="first-half",
        eval_split="second-half",
        num_eval_prompts=4,
        num_generations=2,
        max_completion_length=6,
        prompts_per_step=2,
        reward_funcs=["tests.compare.rewards:length"],
        test_reward_model="tests.compare.rewards:vowels",
        methods=["superhf", "best_of_n", "sft", "grpo"],
        sampled_token_budget=BUDGET,
        seeds=[0],
        learning_rates=[1e-3],
        superhf_betas=[0.0, 0.35],
        superhf_variants={"negatives": {"negative_weight": 0.5}},
        lr_scheduler_type="constant",
        warmup_steps=0,
        method_settings={
            "superhf": {"num_eval_prompts": 2, "eval_steps": 1, "save_steps": 1},
            "grpo": {"num_eval_prompts": 2, "eval_steps": 1},
            "sft": {"max_trained_tokens": 20},
        },
        meteor_pairs=10,
        output_dir=str(root / "out"),
        isolate_runs=False,
    )
    try:
        yield cfg, run_comparison(cfg), Path(cfg.output_dir)
    finally:
        torch.set_num_threads(threads)


def _runs(result, method):
    return [r for r in result["runs"] if r["method"] == method]


def test_every_method_ran_and_results_and_plots_are_written(comparison):
    cfg, result, out = comparison
    assert {r["name"]: r["status"] for r in result["runs"] if r["method"] != "grpo"} == {
        "superhf-lr0.001-b0-s0": "done",
        "superhf-lr0.001-b0.35-s0": "done",
        "superhf_negatives-lr0.001-b0.35-s0": "done",
        "best_of_n-s0": "done",
        "sft-lr0.001-b0-s0": "done",
    }
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["machine"]["cores"] >= 1 and on_disk["machine"]["torch"]
    assert on_disk["start"]["numbers"]["test_reward"] is not None
    for name in (
        "final_test_reward.png",
        "train_vs_test.png",
        "reward_vs_tokens.png",
        "test_reward_vs_tokens.png",
        "kl_sweep.png",
        "frontier_kl.png",
        "frontier_tokens.png",
    ):
        assert (out / name).stat().st_size > 1000, name
    report = (out / "report.md").read_text()
    assert "superhf b=0 (KL 0)" in report and "best_of_n" in report
    for r in result["runs"]:
        if r["status"] == "done":
            assert (
                r["numbers"]["test_reward"] is not None and r["settings"]["method"] == r["method"]
            )
            assert r["numbers"]["entropy"] > 0
    best_of_n = _runs(result, "best_of_n")[0]
    assert (
        best_of_n["sampled_tokens"] > 0 and "analytic_bound_per_sequence" in best_of_n["eval"]["kl"]
    )
    sft = _runs(result, "sft")[0]
    assert sft["done"]["trained_tokens"] >= 20 and sft["done"]["sampled_tokens"] == 0
    for r in _runs(result, "superhf"):  # BUDGET / STEP_TOKENS: at least 2 steps
        assert r["seconds_per_step"] > 0 and 0 < r["tokens_per_step"] <= STEP_TOKENS
        start = result["start"]["numbers"]["reward"]
        gained = 1000 * (r["numbers"]["reward"] - start) / r["sampled_tokens"]
        assert r["reward_gain_per_1k_tokens"] == pytest.approx(gained)
    assert "## Cost and reward per sampled token" in report
    for r in result["runs"]:  # matched updates: one optimizer step per round, as recorded
        if r["method"] in ("superhf", "grpo") and r["status"] == "done":
            assert r["optimizer_steps"] == r["steps"] >= 2, r["name"]
            assert r["update_settings"]["optimizer_steps_per_round"] == 1, r["name"]
            assert r["numbers"]["kl_exact_per_token"] >= 0, r["name"]  # the frontier's x
            for stage in ("sampling", "scoring", "update"):  # time per stage, per method
                assert r[f"seconds_{stage}_per_step"] > 0, (r["name"], stage)
    assert on_disk["update_settings"]["mismatches"] == []
    assert "## What shapes each update" in report and "Matched: every checked run" in report
    # SuperHF's default against every other arm, paired by seed and prompt, worded
    claims = {(c["b"], c["metric"]): c for c in on_disk["claims"]}
    assert {("best_of_n", "test_reward"), ("sft", "reward")} <= set(claims)
    for c in claims.values():
        assert c["a"] == "superhf b=0.35" and c["seeds"] == [0] and c["num_prompts"] == 4
        assert c["word"] in ("better", "level", "worse", "inconclusive")
        assert c["interval"][0] <= c["difference"] <= c["interval"][1]
    assert "## Claims, worded by their intervals" in report
    # every arm against the start it trained from, on the start's own evaluation answers
    gains = {(g["arm"], g["metric"]): g for g in on_disk["gains_over_start"]}
    assert ("superhf b=0.35", "test_reward") in gains and ("sft", "reward") in gains
    assert "## Gain over the start policy, worded by its interval" in report
    assert "## Every run" in report and "| superhf b=0.35 | 0 | 0.001 |" in report
    variant = next(g for g in result["headline"] if g["variant"] == "negatives")
    assert variant["label"] == "superhf[negatives] b=0.35" and variant["seeds"] == [0]
    if any(r["method"] == "grpo" and r["status"] == "done" for r in result["runs"]):
        # every SuperHF arm against GRPO's reward-KL frontier, read from the runs' exact KLs
        placed = {(p["arm"]["label"], p["method"]) for p in on_disk["frontier"]}
        assert ("superhf b=0.35", "grpo") in placed and (
            "superhf[negatives] b=0.35",
            "grpo",
        ) in placed
        assert "## Where SuperHF sits on the reward-KL frontier" in report
    settings = json.loads(
        (out / "runs/superhf_negatives-lr0.001-b0.35-s0/settings.json").read_text()
    )
    assert settings["run"]["extra"]["negative_weight"] == 0.5


def test_the_sampled_token_budget_is_equal_across_methods(comparison):
    _, result, _ = comparison
    trained = [r for r in result["runs"] if r["method"] in ("superhf", "grpo", "rloo")]
    spent = [r["sampled_tokens"] for r in trained if r["status"] == "done"]
    assert len(spent) >= 2
    assert all(BUDGET <= s < BUDGET + STEP_TOKENS for s in spent), spent
    assert all(r["budget_reached"] for r in trained if r["status"] == "done")
    for r in trained:
        if r["status"] == "done" and r["progress"]:
            assert r["progress"][-1]["sampled_tokens"] == r["sampled_tokens"]


def test_rl_runs_log_the_held_out_curve_from_the_start(comparison):
    """SuperHF and the TRL baselines evaluate along the run the same way: the start (step 0,
    no tokens), then every eval_steps updates; the start's numbers agree (same prompts,
    seeds and policy)."""
    _, result, _ = comparison
    starts = []
    for r in result["runs"]:
        if r["method"] not in ("superhf", "grpo") or r["status"] != "done":
            continue
        progress = r["progress"]
        assert progress[0]["step"] == 0 and progress[0]["sampled_tokens"] == 0, r["name"]
        assert all(p["eval_test_reward"] is not None for p in progress), r["name"]
        assert r["steps"] == len(progress) - 1 and r["seconds_per_step"] is not None
        starts.append(progress[0]["eval_test_reward"])
    assert len(starts) >= 3 if importlib.util.find_spec("trl") else len(starts) >= 2
    assert max(starts) - min(starts) < 1e-6


def test_no_method_trains_on_an_eval_prompt(comparison):
    _, result, out = comparison
    read = lambda p: [json.loads(line) for line in p.read_text().splitlines()]  # noqa: E731
    eval_keys = {prompt_key(r) for r in read(out / "data" / "eval.jsonl")}
    train_keys = {prompt_key(r) for r in read(out / "data" / "train.jsonl")}
    sft_keys = {prompt_key(r) for r in read(out / "data" / "sft.jsonl")}
    assert eval_keys and not eval_keys & train_keys and not eval_keys & sft_keys
    assert result["task"]["num_eval_dropped_as_in_training"] == 15
    for r in _runs(result, "superhf"):
        completions = read(Path(r["folder"]) / "completions.jsonl")
        assert completions and not {prompt_key(c) for c in completions} & eval_keys


def test_trl_methods_are_skipped_with_the_reason_without_trl(comparison):
    _, result, _ = comparison
    (grpo,) = _runs(result, "grpo")
    available = all(
        importlib.util.find_spec(name) is not None
        for name in ("trl", "superhf.compare.trl_baselines")
    )
    if available:
        assert grpo["status"] == "done", grpo["reason"]
    else:
        assert grpo["status"] == "skipped"
        assert "superhf[compare]" in grpo["reason"] or "trl_baselines" in grpo["reason"]
        assert result["skipped"] == [{"name": grpo["name"], "reason": grpo["reason"]}]
        assert (
            grpo["name"] in (Path(result["runs"][0]["folder"]).parents[1] / "report.md").read_text()
        )


def test_a_stopped_comparison_resumes_without_redoing_finished_runs(comparison):
    cfg, first, out = comparison
    runs = out / "runs"
    kept = runs / "superhf-lr0.001-b0-s0"
    mtimes = {
        p: p.stat().st_mtime_ns for p in (kept / "done.json", kept / "adapter_model.safetensors")
    }
    # as if the comparison had been killed before the SFT run finished
    (runs / "sft-lr0.001-b0-s0" / "done.json").unlink()
    (runs / "sft-lr0.001-b0-s0" / "compare_eval.json").unlink()
    again = run_comparison(cfg)
    ran = {
        r["name"] for r in again["runs"] if r["ran_in_this_invocation"] and r["status"] == "done"
    }
    assert ran == {"sft-lr0.001-b0-s0"}
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    same = {r["name"]: r["numbers"] for r in first["runs"] if r["method"] == "superhf"}
    assert same == {r["name"]: r["numbers"] for r in again["runs"] if r["method"] == "superhf"}


def test_report_only_reports_what_is_finished_and_runs_nothing(comparison):
    from dataclasses import replace

    cfg, first, out = comparison
    settings = (out / "compare_config.json").read_bytes()
    more = replace(cfg, seeds=[0, 1], report_only=True)
    report = run_comparison(more)
    assert (out / "compare_config.json").read_bytes() == settings  # the comparison's, untouched
    pending = {r["name"] for r in report["runs"] if r["status"] == "pending"}
    assert pending == {r["name"].replace("-s0", "-s1") for r in first["runs"]}
    assert not any((out / "runs" / name).exists() for name in pending)
    done = {r["name"]: r["numbers"] for r in report["runs"] if r["status"] == "done"}
    assert done == {r["name"]: r["numbers"] for r in first["runs"] if r["status"] == "done"}
    assert sorted(report["pending"]) == sorted(pending)
    assert "Not finished yet" in (out / "report.md").read_text()


def test_a_comparison_moved_elsewhere_keeps_its_evaluations(comparison, tmp_path):
    """A comparison folder copied to another place (another machine, a backup) is reported
    from its cached evaluations: its eval prompts' path changed, the file in it did not."""
    import shutil
    from dataclasses import replace

    cfg, first, out = comparison
    moved = tmp_path / "elsewhere"
    shutil.copytree(out, moved)
    cached = [p for p in moved.rglob("compare_eval.json")]
    mtimes = {p: p.stat().st_mtime_ns for p in cached}
    report = run_comparison(replace(cfg, output_dir=str(moved), report_only=True))
    assert not report["pending"]
    done = {r["name"]: r["numbers"] for r in report["runs"] if r["status"] == "done"}
    assert done == {r["name"]: r["numbers"] for r in first["runs"] if r["status"] == "done"}
    assert {p: p.stat().st_mtime_ns for p in cached} == mtimes  # nothing evaluated again


def test_a_comparison_saved_without_weights_resumes_elsewhere_and_redoes_nothing(
    comparison, tmp_path
):
    """Saved (`superhf.compare.archive save`: no weights, no prompt texts) and restored into an
    empty runs folder on "another machine", the comparison runs again: no finished run is
    trained or evaluated again, and every number, the paired claims included, is the same."""
    from dataclasses import replace

    from superhf.compare import archive

    cfg, first, out = comparison
    archive.main(["save", str(out.parent), str(tmp_path / "kept")])
    kept = tmp_path / "kept" / out.name
    assert not list(kept.rglob("*.safetensors"))
    answers = kept / "runs" / "superhf-lr0.001-b0-s0"
    rows = [json.loads(line) for p in answers.glob("completions-*.jsonl") for line in p.open()]
    assert rows and all("prompt" not in r and "test_reward" in r for r in rows)
    archive.main(["restore", str(tmp_path / "kept"), str(tmp_path / "machine")])
    again = run_comparison(replace(cfg, output_dir=str(tmp_path / "machine" / out.name)))
    assert not [r["name"] for r in again["runs"] if r["ran_in_this_invocation"]]
    done = {r["name"]: r["numbers"] for r in again["runs"] if r["status"] == "done"}
    assert done == {r["name"]: r["numbers"] for r in first["runs"] if r["status"] == "done"}
    assert again["claims"] == first["claims"] and again["claims"]


def test_a_run_in_its_own_process_records_done_or_skipped(tmp_path):
    from superhf.compare.harness import train_run
    from superhf.compare.spec import MethodRun

    def run(method: str) -> MethodRun:
        return MethodRun(
            method=method,
            output_dir=str(tmp_path / method),
            model_name_or_path="some/model",
            dataset_name="prompts.jsonl",
            dataset_train_split="train",
            apply_chat_template=False,
            max_prompt_length=64,
            reward_funcs=["tests.compare.rewards:length"],
            reward_weights=None,
            test_reward_model=None,
            num_generations=2,
            max_completion_length=4,
            temperature=1.0,
            top_p=1.0,
            prompts_per_step=1,
            learning_rate=1e-3,
            beta=0.0,
            seed=0,
            sampled_token_budget=10,
        )

    assert train_run(run("best_of_n"), isolate=True) == {"status": "done", "reason": None}
    assert (tmp_path / "best_of_n" / "done.json").is_file()
    status = train_run(run("sft"), isolate=True)  # no chosen answers given: skipped, with why
    assert status["status"] == "skipped" and "chosen" in status["reason"]
    assert not (tmp_path / "sft" / "done.json").exists()


def test_runs_go_seed_by_seed_and_the_kl_sweep_may_have_fewer_seeds():
    from types import SimpleNamespace

    from superhf.compare.harness import expand_runs

    cfg = CompareConfig(
        methods=["superhf", "best_of_n", "grpo"],
        seeds=[0, 1],
        superhf_betas=[0.0, 0.1, 0.35],
        kl_sweep_seeds=[0],
        superhf_variants={"epochs": {"num_train_epochs": 2}, "n1": {"num_generations": 1}},
        method_seeds={"superhf_n1": [0]},
        output_dir="out",
    )
    files = {"train_file": "t", "sft_file": "s", "test_reward_model": None}
    task = SimpleNamespace(**files, reward_funcs=["r"], reward_weights=None)
    names = [Path(r.output_dir).name for r in expand_runs(cfg, task)]
    assert names == [
        "superhf-lr0.0005-b0-s0",
        "superhf-lr0.0005-b0.1-s0",
        "superhf-lr0.0005-b0.35-s0",
        "best_of_n-s0",
        "grpo-lr0.0005-b0-s0",
        "superhf_epochs-lr0.0005-b0.35-s0",  # SuperHF's options after every method
        "superhf_n1-lr0.0005-b0.35-s0",
        "superhf-lr0.0005-b0-s1",
        "superhf-lr0.0005-b0.35-s1",
        "best_of_n-s1",
        "grpo-lr0.0005-b0-s1",
        "superhf_epochs-lr0.0005-b0.35-s1",
    ]


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ({"neg": {"negative_wieght": 0.5}}, "not SuperHF settings"),
        ({"two words": {"beta": 0.1}}, "letters, digits and _"),
    ],
)
def test_a_bad_variant_is_refused_before_anything_runs(variants, message):
    from superhf.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        CompareConfig(superhf_variants=variants, output_dir="out")


def test_a_baselines_beta_list_is_swept_each_beta_its_own_arm():
    from types import SimpleNamespace

    from superhf.compare.harness import expand_runs
    from superhf.compare.results import label

    cfg = CompareConfig(
        methods=["grpo", "rloo"],
        seeds=[0],
        learning_rates=[1e-4, 1e-3],
        method_settings={"grpo": {"beta": [0.0, 0.04], "loss_type": "dapo"}},
        output_dir="out",
    )
    files = {"train_file": "t", "sft_file": None, "test_reward_model": None}
    task = SimpleNamespace(**files, reward_funcs=["r"], reward_weights=None)
    runs = expand_runs(cfg, task)
    assert [(r.method, r.beta, r.learning_rate) for r in runs] == [
        ("grpo", 0.0, 1e-4),
        ("grpo", 0.04, 1e-4),
        ("grpo", 0.0, 1e-3),
        ("grpo", 0.04, 1e-3),
        ("rloo", 0.05, 1e-4),
        ("rloo", 0.05, 1e-3),
    ]
    assert all("beta" not in r.extra for r in runs)
    assert {r.extra.get("loss_type") for r in runs if r.method == "grpo"} == {"dapo"}
    assert label("grpo", 0.04) == "grpo b=0.04" != label("grpo", 0.0)


def test_later_seeds_run_only_at_the_rate_chosen_on_the_sweep_seeds(tmp_path, tiny_model_dir):
    """sweep_seeds: every rate at seed 0; seed 1 only at the rate seed 0's in-run train
    reward chose, and the later seed never moves the choice."""
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _hh_rows()), encoding="utf-8")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = CompareConfig(
        model_name_or_path=str(tiny_model_dir),
        dataset_name=str(data),
        dataset_train_split="first-half",
        eval_split="second-half",
        num_eval_prompts=2,
        num_generations=2,
        max_completion_length=6,
        prompts_per_step=2,
        reward_funcs=["tests.compare.rewards:length"],
        methods=["superhf"],
        sampled_token_budget=BUDGET,
        seeds=[0, 1],
        sweep_seeds=[0],
        learning_rates=[1e-4, 3e-2],
        superhf_betas=[0.35],
        method_settings={"superhf": {"num_eval_prompts": 2, "eval_steps": 1}},
        meteor_pairs=10,
        output_dir=str(tmp_path / "out"),
        isolate_runs=False,
    )
    try:
        result = run_comparison(cfg)
    finally:
        torch.set_num_threads(threads)
    ran = {(r["seed"], r["learning_rate"]): r for r in result["runs"]}
    sweep = {lr: ran[(0, lr)] for lr in (1e-4, 3e-2)}
    scores = {
        lr: [p["eval_reward"] for p in r["progress"] if p.get("eval_reward") is not None][-1]
        for lr, r in sweep.items()
    }
    best = max(scores, key=scores.get)
    assert set(ran) == {(0, 1e-4), (0, 3e-2), (1, best)}
    (headline,) = result["headline"]
    assert headline["learning_rate"] == best and headline["seeds"] == [0, 1]
    assert headline["selection_score"] == pytest.approx(scores[best])  # seed 0's alone


def test_chosen_rates_from_runs_each_arm_at_the_rate_another_comparison_chose(tmp_path):
    from types import SimpleNamespace

    from superhf.compare.harness import at_rates_chosen_in, expand_runs
    from superhf.errors import ConfigError

    cfg = CompareConfig(
        methods=["superhf", "grpo"],
        seeds=[0, 1],
        learning_rates=[1e-4, 5e-4, 2e-3],
        superhf_betas=[0.0, 0.35],
        output_dir="out",
    )
    task = SimpleNamespace(
        train_file="t", sft_file=None, test_reward_model=None, reward_funcs=["r"],
        reward_weights=None,
    )  # fmt: skip
    results = tmp_path / "results.json"
    headline = [
        {"method": "superhf", "variant": "", "beta": 0.35, "learning_rate": 5e-4},
        {"method": "grpo", "variant": "", "beta": 0.0, "learning_rate": 2e-3},
    ]
    results.write_text(json.dumps({"headline": headline}))
    kept = at_rates_chosen_in(str(results), expand_runs(cfg, task))
    assert sorted((r.method, r.beta, r.learning_rate, r.seed) for r in kept) == [
        ("grpo", 0.0, 2e-3, 0),
        ("grpo", 0.0, 2e-3, 1),
        ("superhf", 0.35, 5e-4, 0),
        ("superhf", 0.35, 5e-4, 1),
    ]  # superhf at beta 0 had no chosen rate there: not run
    with pytest.raises(ConfigError, match="does not exist"):
        at_rates_chosen_in(str(tmp_path / "none.json"), expand_runs(cfg, task))
