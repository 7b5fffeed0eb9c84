"""``steerlab audit``: sample N answers per reasoning question, trace them from inside while sampling, and
measure how well latent and confidence signals pick the right one against majority vote."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from . import common
from .common import DEVICE, DTYPE, MODEL, console, fail


def audit(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for selection.csv, signals.csv, results.json, "
                                                      "figures/ and report.html."),
    task: str = typer.Option("basic_arithmetic", "--task", "-t",
                             help="basic_arithmetic, chain_sum, simple_equations or letter_counting (reasoning-gym)."),
    questions: int = typer.Option(40, help="Questions (30% calibrate thresholds and the probe, 70% are measured)."),
    samples: int = typer.Option(8, help="Sampled answers per question (N)."),
    max_new_tokens: int = typer.Option(128, help="Token limit of each sample."),
    temperature: float = typer.Option(0.7, help="Sampling temperature."),
    segment: int = typer.Option(16, help="Tokens per segment of the latent trajectory (the paper's 500 fits "
                                         "traces of thousands of tokens)."),
    window: int = typer.Option(16, help="Tokens per group of the confidence signals and of online stopping."),
    keep: float = typer.Option(0.9, help="Share of calibration samples online stopping would keep."),
    calibration: float = typer.Option(0.3, help="Share of questions used for calibration."),
    batch: int = typer.Option(64, help="Rows per generate call (questions x samples)."),
    seed: int = typer.Option(0, help="Seed of the questions, the split and the sampling."),
    overwrite: bool = typer.Option(False, help="Replace an earlier audit in --out."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
) -> None:
    """Audit reasoning from latent states: best-of-N, sequential selection and online stopping vs majority vote.

    Hidden states and top-k log-probabilities are captured in the sampling passes themselves. A base
    model (no chat template) is shown two worked examples of the task and stops at its answer line.

    Example:  steerlab audit --task basic_arithmetic --questions 40 --samples 8 --out audit/
    """
    from ..reasoning.audit import audit as run_audit
    from ..reasoning.tasks import TASKS

    if task not in TASKS:
        fail(f"--task {task!r} is not known; use one of {', '.join(TASKS)}")
    if min(samples, max_new_tokens, segment, window, batch) < 1:
        fail("--samples, --max-new-tokens, --segment, --window and --batch must be at least 1")
    if questions < 4:
        fail(f"--questions {questions} must be at least 4")
    if not 0 < calibration < 1 or not 0 < keep <= 1:
        fail("--calibration must be in (0, 1) and --keep in (0, 1]")
    if out.exists() and not out.is_dir():
        fail(f"--out {str(out)!r} exists and is not a folder")
    started = time.perf_counter()
    m = common.load_model(model, dtype, device)
    results = run_audit(m, task, questions, samples, out, seed=seed, calibration=calibration, segment=segment,
                        max_new_tokens=max_new_tokens, temperature=temperature, window=window, keep=keep,
                        batch=batch, overwrite=overwrite)
    view = Table(title=f"{task}: {results['test_questions']} held-out questions, N={samples}")
    for col in ("selector", "accuracy", "95% CI", "tokens", "vs majority (95% CI)"):
        view.add_column(col)
    for row in results["selection"]:
        view.add_row(row["selector"], f"{row['accuracy']:.3f}", f"{row['ci_low']:.2f}-{row['ci_high']:.2f}",
                     f"{row['tokens']:.0f}", f"{row['vs_majority']:+.3f} ({row['vs_majority_low']:+.2f}, "
                                            f"{row['vs_majority_high']:+.2f})")
    console.print(view)
    console.print(f"report -> {out / 'report.html'}  [dim]done in {time.perf_counter() - started:.0f} s[/]")


def audit_efficiency(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for efficiency.csv, frontier.csv, efficiency.png, "
                                                      "direction/ and results.json."),
    task: str = typer.Option("basic_arithmetic", "--task", "-t",
                             help="basic_arithmetic, chain_sum, simple_equations or letter_counting (reasoning-gym)."),
    train: int = typer.Option(32, help="Questions whose concise and verbose answers build the direction."),
    test: int = typer.Option(48, help="Held-out questions the strengths are measured on (the next ones)."),
    strengths: str = typer.Option("0,0.5,1,2,4", help="Comma-separated strengths (multiples of the raw "
                                                        "concise-minus-verbose vector); 0 is the unsteered model."),
    layer: int | None = typer.Option(None, help="Layer the direction is added at (default: the middle one)."),
    max_new_tokens: int = typer.Option(128, help="Token limit of each answer."),
    seed: int = typer.Option(0, help="Seed of the questions."),
    overwrite: bool = typer.Option(False, help="Replace an earlier efficiency run in --out."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
) -> None:
    """Efficiency steering: a direction from concise vs verbose answers, swept for accuracy against tokens.

    The model answers the training questions twice (briefly; step by step in detail); the mean difference
    of the two answers' activations is added during reasoning at each strength; greedy answers to the
    held-out questions are scored by the task's scorer and counted in tokens.

    Example:  steerlab audit-efficiency --task basic_arithmetic --train 32 --test 48 --out efficiency/
    """
    from ..evaluate.efficiency import efficiency_sweep
    from ..io import save_folder, write_json
    from ..reasoning.tasks import TASKS
    from ..report.figures import frontier_figure

    if task not in TASKS:
        fail(f"--task {task!r} is not known; use one of {', '.join(TASKS)}")
    if min(train, test, max_new_tokens) < 1:
        fail("--train, --test and --max-new-tokens must be at least 1")
    try:
        grid = [float(x) for x in strengths.split(",") if x.strip()]
    except ValueError:
        fail(f"--strengths {strengths!r} must be comma-separated numbers, e.g. 0,0.5,1,2")
    if not grid:
        fail("--strengths is empty")
    if out.exists() and not out.is_dir():
        fail(f"--out {str(out)!r} exists and is not a folder")
    started = time.perf_counter()
    m = common.load_model(model, dtype, device)
    console.print(f"building the direction from {train} questions, then {len(grid)} strengths x {test} questions ...")
    res = efficiency_sweep(m, task, train, test, grid, layer, seed, max_new_tokens)
    table = res.results.drop(columns=["param"], errors="ignore")
    results = {"format": "steerlab-efficiency-1", **res.settings, "results": table.to_dict("records"),
               "frontier": res.frontier["strength"].tolist(), "seconds": round(time.perf_counter() - started, 1),
               "direction_norm": float(res.direction[res.settings["layer"]].norm()),
               "traces": {"questions": res.traces.questions, "concise": res.traces.concise,
                          "verbose": res.traces.verbose}}

    def fill(folder: Path) -> None:
        table.to_csv(folder / "efficiency.csv", index=False)
        res.frontier.drop(columns=["param"], errors="ignore").to_csv(folder / "frontier.csv", index=False)
        png = frontier_figure(res.results, "accuracy", utilities=("length",),
                              higher={"accuracy": True, "length": False},
                              title=f"{task}: accuracy vs tokens per answer, by strength")
        (folder / "efficiency.png").write_bytes(png)
        res.direction.save(folder / "direction")
        write_json(folder / "results.json", results)

    save_folder(out, fill, marker="results.json", format="steerlab-efficiency-1", overwrite=overwrite,
                what="efficiency run")
    view = Table(title=f"{task}: {res.settings['test_questions']} held-out questions, layer {res.settings['layer']}")
    paired = "vs_unsteered" in table
    for col in ("strength", "accuracy", "95% CI", "tokens", "truncated") + (("vs unsteered (95% CI)",) if paired else ()):
        view.add_column(col)
    for row in table.itertuples():
        cells = [f"{row.strength:g}", f"{row.accuracy:.3f}", f"{row.accuracy_low:.2f}-{row.accuracy_high:.2f}",
                 f"{row.length:.1f}", f"{row.truncated:.2f}"]
        if paired:
            cells.append(f"{row.vs_unsteered:+.3f} ({row.vs_unsteered_low:+.2f}, {row.vs_unsteered_high:+.2f})")
        view.add_row(*cells)
    console.print(view)
    console.print(f"-> {out}  [dim]done in {time.perf_counter() - started:.0f} s[/]")


COMMANDS: dict[str, Callable[..., Any]] = {"audit": audit, "audit-efficiency": audit_efficiency}


def register(app: typer.Typer) -> None:
    """Add ``audit`` to ``app``."""
    common.add_commands(app, COMMANDS)
