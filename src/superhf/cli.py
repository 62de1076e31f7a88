"""Command line: a thin layer over the Python API.

superhf train                                  # the embedded default (SmolLM2, offline)
superhf train --config configs/quickstart.yaml --num_generations 8
superhf train --help                           # every setting, grouped
accelerate launch -m superhf train ...         # one run over many processes (README)

Every command reads its settings the same way (a config dataclass read by
`superhf.settings.parse_config_args`: defaults, then `--config FILE.yaml`, then `--name value`
flags; `CMD --help` lists them, grouped, under the command's description) and then calls the
Python API. A command's docstring here is the one line `superhf --help` shows. Only the
settings' modules load before the settings are checked, so `--help` and a refused setting
answer at once; torch and transformers load with the work.
A `SuperHFError` from any command is one red line and its exit code (`_ErrorBoundary`).
"""

from __future__ import annotations

from typing import Any

import click
import typer
from rich.markup import escape
from typer.core import TyperGroup

from superhf.console import make_console
from superhf.errors import SuperHFError

console = make_console()


class _ErrorBoundary(TyperGroup):
    """The one place a `SuperHFError` becomes `error: <message>` on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SuperHFError as err:
            console.print(f"[bold red]error:[/bold red] {escape(str(err))}", soft_wrap=True)
            raise typer.Exit(err.exit_code) from None


app = typer.Typer(
    cls=_ErrorBoundary,
    help="SuperHF: align language models with supervised iterative learning from feedback.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Keep `train` a subcommand (Typer runs a lone command directly otherwise)."""


_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command(context_settings=_PASSTHROUGH)
def train(ctx: typer.Context) -> None:
    """Run SuperHF: sample, score, keep the best, fine-tune; repeat."""
    from superhf.config import parse_train_args

    config = parse_train_args(list(ctx.args))
    from superhf.train.trainer import SuperHFTrainer

    trainer = SuperHFTrainer(args=config)
    trainer.train()
    trainer.processes.finish()  # many processes: wait for all, leave the group
    code = 0
    if trainer.stop_signal is not None:  # stopped by SIGINT/SIGTERM after saving
        code = 128 + trainer.stop_signal
    elif trainer.stop_reason is not None:  # stop_on_reward_hacking: saved, not finished
        code = 3
    elif trainer.accelerator.is_main_process:
        where = config.output_dir
        console.print(f"Done. Model, metrics.jsonl and completions.jsonl are in {where}")
    trainer.processes.exit(code)  # many processes: end here, before Python's shutdown
    if code:
        raise typer.Exit(code)


reward_app = typer.Typer(help="Reward models: train one on human preference pairs.")
app.add_typer(reward_app, name="reward")


@reward_app.command("train", context_settings=_PASSTHROUGH)
def reward_train(ctx: typer.Context) -> None:
    """Train a Bradley-Terry reward model; `superhf reward train --help` lists every setting."""
    from superhf.rewards.training import RewardTrainingConfig, train_reward_model
    from superhf.settings import parse_config_args

    config = parse_config_args(
        RewardTrainingConfig,
        list(ctx.args),
        prog="superhf reward train",
        description="Train a reward model (one logit) with the Bradley-Terry loss on "
        "preference pairs.",
    )
    train_reward_model(config)
    console.print(f"Done. Use it with: superhf train --reward_funcs {config.output_dir}")


@app.command("eval", context_settings=_PASSTHROUGH)
def eval_(ctx: typer.Context) -> None:
    """Evaluate models or runs on held-out prompts (reward, KL, ...)."""
    from superhf.config import parse_eval_args

    models, config = parse_eval_args(list(ctx.args))
    from superhf.evaluation.evaluate import evaluate_models

    evaluate_models(models, config, console=console)
    console.print(f"Done. eval.json and completions-*.jsonl are in {config.output_dir}")


@app.command("report", context_settings=_PASSTHROUGH)
def report(ctx: typer.Context) -> None:
    """report.md and report.html: curves and completions of runs."""
    from superhf.evaluation.report import build_report, parse_report_args

    config = parse_report_args(list(ctx.args))
    path = build_report(config.run_dirs, config.output_dir, console=console)
    console.print(f"Done. Report: {path} and {path.with_name('report.html')} (open it offline)")


@app.command("calibrate", context_settings=_PASSTHROUGH)
def calibrate(ctx: typer.Context) -> None:
    """MMLU calibration: the paper's MSE over 10 bins, and ECE."""
    from superhf.evaluation.calibration import parse_calibration_args, run_calibration

    config = parse_calibration_args(list(ctx.args))
    run_calibration(config, console=console)
    console.print(f"Done. calibration.json and reliability.png are in {config.output_dir}")


@app.command("judge", context_settings=_PASSTHROUGH)
def judge(ctx: typer.Context) -> None:
    """Pairwise LLM judge, both orders per pair; Elo and win rates."""
    from superhf.evaluation.judge import make_judge, parse_judge_args, run_judge

    config = parse_judge_args(list(ctx.args))
    run_judge(config, make_judge(config), console=console)
    console.print(f"Done. judge.json and judgements.jsonl are in {config.output_dir}")


@app.command("monitor", context_settings=_PASSTHROUGH)
def monitor(ctx: typer.Context) -> None:
    """Replay the reward-hacking monitor over runs' logs: its warnings."""
    from superhf.evaluation.monitor_replay import monitor_runs, parse_monitor_args

    config = parse_monitor_args(list(ctx.args))
    monitor_runs(config, make_console(stderr=False))


@app.command("compare", context_settings=_PASSTHROUGH)
def compare(ctx: typer.Context) -> None:
    """SuperHF vs best-of-n, SFT, GRPO, RLOO, PPO: equal budget."""
    from superhf.compare.config import parse_compare_args

    config = parse_compare_args(list(ctx.args))
    from superhf.compare.harness import run_comparison

    run_comparison(config, console=console)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
