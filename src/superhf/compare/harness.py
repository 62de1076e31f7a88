"""`superhf compare`: every method on one task at an equal sampled-token budget, then one
evaluation of every run, then results.json, plots and report.md.

    superhf compare --config configs/compare/hh.yaml --output_dir runs/compare
    run_comparison(CompareConfig(methods=["superhf", "best_of_n"], seeds=[0]))

Runs are (method or SuperHF variant x seed x learning rate [x beta for SuperHF])
`MethodRun`s, one folder each under output_dir/runs/. A run with done.json is never redone
and an evaluated run is never re-evaluated (compare_eval.json), so running the same command
again continues a killed comparison; a SuperHF run also resumes from its own checkpoint.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from rich.console import Console

from superhf.compare import evaluation, plots, report, results, update_settings
from superhf.compare.config import SUPERHF_DEFAULT_BETA, CompareConfig
from superhf.compare.methods import (
    RUN_FILE,
    STATUS_FILE,
    execute,
    planned_settings,
    write_json,
)
from superhf.compare.spec import DONE_FILE, MethodRun
from superhf.compare.task import Task, prepare_task
from superhf.config import TaskSettings
from superhf.console import make_console, progress_bar
from superhf.errors import ConfigError

SHARED_EXTRAS = ("lr_scheduler_type", "warmup_steps", "max_grad_norm")
"""Settings every trained method gets in its `extra` (TRL's config fields have these names)."""


def run_name(method: str, learning_rate: float, beta: float, seed: int, variant: str = "") -> str:
    if method == "best_of_n":
        return f"best_of_n-s{seed}"
    arm = f"{method}_{variant}" if variant else method
    return f"{arm}-lr{learning_rate:g}-b{beta:g}-s{seed}"


def _arms(cfg: CompareConfig) -> list[tuple[str, str, list[float], dict[str, Any]]]:
    """(method, variant, betas, extras) of every row: the methods, then SuperHF's variants."""
    arms = []
    for method in cfg.methods:
        betas = cfg.superhf_betas if method == "superhf" else cfg.betas_of(method)
        arms.append((method, "", betas, cfg.extra_of(method)))
        if method == "superhf":
            for name, settings in cfg.superhf_variants.items():
                beta = float(settings.get("beta", SUPERHF_DEFAULT_BETA))
                own = {k: v for k, v in settings.items() if k != "beta"}
                arms.append((method, name, [beta], cfg.extra_of(method) | own))
    return arms


def task_settings(cfg: CompareConfig, task: Task) -> dict[str, Any]:
    """The `TaskSettings` every run gets: the comparison's, with the prompts and rewards the
    task prepared (the training prompts file, a built train or test reward model)."""
    values = {f.name: copy.deepcopy(getattr(cfg, f.name)) for f in fields(TaskSettings)}
    return values | {
        "dataset_name": task.train_file,
        "dataset_train_split": "train",
        "reward_funcs": list(task.reward_funcs),
        "reward_weights": copy.deepcopy(task.reward_weights),
        "test_reward_model": task.test_reward_model,
    }


def expand_runs(cfg: CompareConfig, task: Task) -> list[MethodRun]:
    """One MethodRun per (method or variant, seed, learning rate[, SuperHF beta]), seed by
    seed."""
    out = Path(cfg.output_dir) / "runs"
    shared = task_settings(cfg, task)
    runs = []
    for method, variant, betas, own in _arms(cfg):
        rates = [0.0] if method == "best_of_n" else cfg.learning_rates
        extra = {name: getattr(cfg, name) for name in SHARED_EXTRAS}
        extra["max_grad_norm"] = cfg.max_grad_norm or 0.0  # 0: no clipping, for TRL too
        if method == "sft":
            extra["sft_data"] = task.sft_file
        extra |= own
        for seed in cfg.seeds_of(method, variant):
            for lr in rates:
                for beta in betas:
                    if method == "superhf" and not cfg.runs_beta_at_seed(beta, seed):
                        continue
                    name = run_name(method, lr, beta, seed, variant)
                    runs.append(
                        MethodRun(
                            **copy.deepcopy(shared),
                            method=method,
                            output_dir=str(out / name),
                            prompts_per_step=cfg.prompts_per_step,
                            learning_rate=lr,
                            beta=beta,
                            seed=seed,
                            sampled_token_budget=cfg.sampled_token_budget,
                            extra=dict(extra),
                            variant=variant,
                        )
                    )
    # Seed-major, and within a seed the methods before SuperHF's options: a comparison cut
    # short has every method's first seed before any second seed, and before any option.
    order = {seed: i for i, seed in enumerate(dict.fromkeys(r.seed for r in runs))}
    return sorted(runs, key=lambda r: (order[r.seed], bool(r.variant)))


def check_updates(cfg: CompareConfig, runs: list[MethodRun]) -> None:
    """Refuse, before any model loads, a comparison whose methods' updates would differ in a
    matched setting (`update_settings`), unless allow_mismatched_updates."""
    if cfg.allow_mismatched_updates:
        return
    planned = [
        {
            "name": Path(run.output_dir).name,
            "method": run.method,
            "variant": run.variant,
            "update_settings": update_settings.effective(run.method, planned_settings(run)),
        }
        for run in runs
    ]
    update_settings.check_matched(planned, cfg.superhf_variants)


def train_run(run: MethodRun, isolate: bool) -> dict[str, Any]:
    """Run one method run (in its own process when `isolate`); its status."""
    folder = Path(run.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / RUN_FILE, run.to_dict())
    if not isolate:
        return execute(run)
    with (folder / "log.txt").open("a", encoding="utf-8") as log:
        code = subprocess.call(
            [sys.executable, "-m", "superhf.compare.methods", str(folder / RUN_FILE)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if (folder / DONE_FILE).is_file():
        return {"status": "done", "reason": None}
    if (folder / STATUS_FILE).is_file():
        return json.loads((folder / STATUS_FILE).read_text(encoding="utf-8"))
    if code < 0 or code in (130, 143):
        raise KeyboardInterrupt(f"{run.output_dir} was stopped (exit code {code})")
    return {"status": "failed", "reason": f"exit code {code}; see {folder / 'log.txt'}"}


def evaluate_run(
    run: MethodRun, evaluator: evaluation.Evaluator, name: str
) -> dict[str, Any] | None:
    """The run's evaluation, from its cache when the evaluation settings are the same."""
    folder = Path(run.output_dir)
    hit = evaluator.cached(folder)
    if hit is not None:
        return hit
    if run.method == "best_of_n":
        metrics = evaluator.evaluate_best_of_n(
            run.model_name_or_path, run.num_generations, run.seed, folder
        )
    else:
        metrics = evaluator.evaluate_policy(str(folder), name, folder)
    stored = evaluation.store(folder, {"settings": evaluator.settings(), "metrics": metrics})
    return stored["metrics"]


def at_rates_chosen_in(path: str, runs: list[MethodRun]) -> list[MethodRun]:
    """The runs at the learning rate another comparison's results.json chose for their arm."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(
            f"chosen_rates_from: {path} does not exist; run that comparison first (its "
            "results.json names each arm's chosen learning rate)."
        )
    headline = json.loads(file.read_text(encoding="utf-8"))["headline"]
    chosen = {arm_of(row): row["learning_rate"] for row in headline}
    missing = {arm_of(r) for r in runs} - set(chosen)
    kept = [r for r in runs if chosen.get(arm_of(r)) == r.learning_rate]
    if not kept:
        raise ConfigError(
            f"chosen_rates_from: none of this comparison's arms has its chosen rate among "
            f"learning_rates {sorted({r.learning_rate for r in runs})} in {path}."
        )
    if missing:
        print(f"chosen_rates_from: no rate chosen for {sorted(missing)} in {path}; not run.")
    return kept


def split_sweep(cfg: CompareConfig, runs: list[MethodRun]) -> tuple[list, list]:
    """(the runs at the sweep seeds, every rate; the other seeds' runs, every rate: only those
    at their arm's chosen rate will run). Without sweep_seeds every run is in the first."""
    if cfg.sweep_seeds is None:
        return runs, []
    return (
        [r for r in runs if r.seed in cfg.sweep_seeds],
        [r for r in runs if r.seed not in cfg.sweep_seeds],
    )


def arm_of(run: MethodRun | dict[str, Any]) -> tuple:
    """(method, variant, beta): what shares a chosen learning rate (`results.arm_key` less the
    rate, for a run spec or a results row)."""
    if isinstance(run, dict):
        return results.arm_key(run)[:3]
    return (run.method, run.variant, run.beta)


def chosen_rates(records: list[dict[str, Any]]) -> dict[tuple, float]:
    """Each arm's learning rate chosen on `records` (`results.summarize_groups`' rule)."""
    rows = results.summarize_groups(records, {})
    return {arm_of(row): row["learning_rate"] for row in rows if row["chosen_learning_rate"]}


def run_and_record(
    cfg: CompareConfig, run: MethodRun, evaluator: evaluation.Evaluator, progress: Any, bar: Any
) -> dict[str, Any]:
    """Train the run unless finished (report_only: never), evaluate it; its record."""
    name = Path(run.output_dir).name
    done_before = (Path(run.output_dir) / DONE_FILE).is_file()
    status = {"status": "done", "reason": None}
    metrics = None
    if cfg.report_only:
        metrics = evaluator.cached(Path(run.output_dir)) if done_before else None
        if metrics is None:
            status = {"status": "pending", "reason": "not finished or not evaluated yet"}
    else:
        if not done_before:
            progress.update(bar, description=f"training {name}")
            status = train_run(run, cfg.isolate_runs)
        if status["status"] == "done":
            progress.update(bar, description=f"evaluating {name}")
            try:
                metrics = evaluate_run(run, evaluator, name)
            except Exception as err:  # recorded; the comparison goes on
                status = {"status": "failed", "reason": f"evaluation: {err!r}"}
    record = results.run_record(run, status, metrics, redone=not done_before)
    progress.console.print(results.headline_line(name, metrics, record), soft_wrap=True)
    progress.advance(bar)
    return record


def run_comparison(cfg: CompareConfig, console: Console | None = None) -> dict[str, Any]:
    """Prepare the task, run every unfinished run, evaluate, write results; results.json's dict."""
    console = console or make_console(stderr=False)
    started = time.perf_counter()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.report_only:  # a report leaves the running comparison's settings as they are
        write_json(out / "compare_config.json", cfg.to_dict())
    task = prepare_task(cfg, console)
    runs = expand_runs(cfg, task)
    check_updates(cfg, runs)
    planned = (
        f"{len(runs)} runs"
        if cfg.sweep_seeds is None
        else f"{sum(r.seed in cfg.sweep_seeds for r in runs)} sweep runs, then the other seeds "
        "at each arm's chosen rate"
    )
    console.print(
        f"superhf compare: {planned} ({', '.join(cfg.methods)}), "
        f"{task.info['num_eval_prompts']} eval prompts, budget {cfg.sampled_token_budget} "
        f"sampled tokens per run -> {out}"
    )
    evaluator = evaluation.Evaluator(
        task.eval_file,
        task.reward_funcs,
        task.reward_weights,
        task.test_reward_model,
        cfg.eval_max_completion_length or cfg.max_completion_length,
        cfg.num_eval_prompts,
        cfg.max_prompt_length,
        cfg.apply_chat_template,
        cfg.meteor_pairs,
        cfg.eval_seed,
        console,
        root=cfg.output_dir,
    )
    if cfg.chosen_rates_from is not None:
        runs = at_rates_chosen_in(cfg.chosen_rates_from, runs)
    sweep, later = split_sweep(cfg, runs)
    with progress_bar(console) as progress:
        bar = progress.add_task("comparison", total=len(sweep) + len(later) + 1)
        progress.update(bar, description="evaluating the start policy")
        start = evaluate_start(out / "start", evaluator, cfg.model_name_or_path)
        progress.console.print(results.headline_line("start", start, None))
        progress.advance(bar)
        records = [run_and_record(cfg, run, evaluator, progress, bar) for run in sweep]
        if later:  # the other seeds, at each arm's rate chosen on the sweep's seeds
            chosen = chosen_rates(records)
            later = [r for r in later if chosen.get(arm_of(r)) == r.learning_rate]
            progress.update(bar, total=len(sweep) + len(later) + 1)
            records += [run_and_record(cfg, run, evaluator, progress, bar) for run in later]
        progress.update(bar, description="comparison")
    result = results.build_results(cfg, task, evaluator, start, records, started)
    write_outputs(result, out, console)
    mismatched = result["update_settings"]["mismatches"]
    if mismatched and not cfg.allow_mismatched_updates:  # runs finished under other settings
        raise ConfigError(
            "the finished runs' updates are not matched (results.json and report.md mark it):"
            "\n  - " + "\n  - ".join(mismatched) + "\n" + update_settings.FIX
        )
    return result


def evaluate_start(folder: Path, evaluator: evaluation.Evaluator, model: str) -> dict[str, Any]:
    """The start policy, evaluated like every run (its KL to itself is 0)."""
    hit = evaluator.cached(folder)
    if hit is not None:
        return hit
    metrics = evaluator.evaluate_policy(model, "start", folder, reference_model=model)
    return evaluation.store(folder, {"settings": evaluator.settings(), "metrics": metrics})[
        "metrics"
    ]


def write_outputs(result: dict[str, Any], out: Path, console: Console) -> None:
    """results.json, the plots and report.md."""
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    drawn = plots.draw_plots(result, out)
    path = report.write_report(result, drawn, out)
    console.print(f"Done. {out / 'results.json'}, {len(drawn)} plots and {path}")
