"""``steerlab robustness``, ``steerlab introspect``, ``steerlab truth-stability``, ``steerlab lofit``: safety and
self-report audits and localized fine-tuning, each writing its tables, a JSON summary and a figure."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from ..errors import DataError
from . import common
from .common import DEVICE, DTYPE, MODEL


def _floats(text: str, option: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DataError(f"{option} {text!r} must be numbers separated by commas, e.g. 0.05,0.1") from None
    if not values:
        raise DataError(f"{option} is empty; give numbers separated by commas")
    return values


def _out_folder(out: Path, force: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise DataError(f"--out {str(out)!r} exists and is not an empty folder; choose a new one or pass --force")


def robustness(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for table.csv, layers.csv, results.json, robustness.png."),
    n: int = typer.Option(24, help="Harmful prompts asked (HarmBench test split); only refused ones are audited."),
    layers: str | None = typer.Option(None, help="Layers to perturb, e.g. 0-29, 2,8,14 or -3--1 (default: every layer)."),
    radii: str = typer.Option("0.05,0.1,0.2,0.4", help="Perturbation sizes as fractions of the layer's token norm."),
    n_random: int = typer.Option(3, help="Random directions per prompt and radius."),
    steps: int = typer.Option(1, help="Gradient steps of the adversarial (ASA) perturbation."),
    system: str | None = typer.Option(None, help="System prompt for every call; 'refuse' uses steerlab's "
                                                 "refusal-inducing one (for models that rarely refuse)."),
    max_new_tokens: int = typer.Option(24, help="Tokens of each greedy reply (the refusal target and the flip check)."),
    target_tokens: int = typer.Option(16, help="Reply tokens kept as the refusal target."),
    flips: bool = typer.Option(True, help="Also decode under each perturbation to count flipped refusals."),
    flip_random: bool = typer.Option(True, help="Decode under the random perturbations too (else adversarial only)."),
    seed: int = typer.Option(0, help="Seed of the prompt split and the random directions."),
    force: bool = typer.Option(False, help="Write into a non-empty --out."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
) -> None:
    """Which layers' residual stream flips the model's own refusals fastest (random vs adversarial perturbations).

    Example:  steerlab robustness --model smollm2 --system refuse --layers 0-29 --radii 0.05,0.1,0.2 --out robust/
    """
    import steerlab as sl
    from steerlab import io
    from steerlab.analysis.audit_figures import plot_robustness
    from steerlab.evaluate.robustness import REFUSAL_SYSTEM, latent_robustness

    values = _floats(radii, "--radii")
    common.check_count(n, "--n")
    _out_folder(out, force)
    harmful = sl.evaluate.refusal_prompts(0, 0, n, seed)["test"]["harmful"]
    m = common.load_model(model, dtype, device)
    layer_list = common.parse_layers(layers, m.n_layers)
    sys_prompt = REFUSAL_SYSTEM if system == "refuse" else system
    started = time.perf_counter()
    audit = latent_robustness(m, harmful, layers=layer_list, radii=values, n_random=n_random, steps=steps,
                              system=sys_prompt, max_new_tokens=max_new_tokens, target_tokens=target_tokens,
                              flips=flips, flip_random=flip_random, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    audit.table.to_csv(out / "table.csv", index=False)
    audit.layers.to_csv(out / "layers.csv", index=False)
    io.write_json(out / "results.json", {
        "model": m.name, "system": sys_prompt, "asked": audit.refusals.asked, "refused": len(audit.refusals.prompts),
        "radii": values, "n_random": n_random, "steps": steps, "max_new_tokens": max_new_tokens,
        "target_tokens": target_tokens, "flip_random": flip_random, "seed": seed, "seconds": time.perf_counter() - started,
        "table": audit.table.to_dict("records"), "layers": audit.layers.to_dict("records"),
        "refusals": [{"prompt": p, "reply": r} for p, r in zip(audit.refusals.prompts, audit.refusals.replies)]})
    plot_robustness(audit.table).savefig(out / "robustness.png")
    typer.echo(f"{len(audit.refusals.prompts)}/{audit.refusals.asked} prompts refused and audited")
    typer.echo(audit.layers.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    typer.echo(f"-> {out}")


def truth_stability(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for table.csv, results.json and truth.png."),
    layers: str | None = typer.Option(None, help="Layers to probe, e.g. 0-29, 6,12 or -3--1 (default: every layer)."),
    test: float = typer.Option(0.3, help="Share of statements held out (true/false pairs kept together)."),
    C: float = typer.Option(1.0, "--C", help="Inverse L2 strength of the logistic-regression probes."),
    template: str = typer.Option("{statement}", help="How each statement is written to the model."),
    seed: int = typer.Option(0, help="Seed of the train/test split."),
    force: bool = typer.Option(False, help="Write into a non-empty --out."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
) -> None:
    """How much a true/not-true probe's decisions flip when "neither" statements are relabelled, per layer.

    Uses the bundled true / false / neither statements (48 each); held-out statements only.

    Example:  steerlab truth-stability --model smollm2 --layers 0-29 --out truth/
    """
    from steerlab import io
    from steerlab.analysis.audit_figures import plot_truth_stability
    from steerlab.analysis.truth import truth_stability as run

    common.check_number(test, "--test", 0.05, 0.95)
    common.check_number(C, "--C", 1e-6)
    _out_folder(out, force)
    m = common.load_model(model, dtype, device)
    result = run(m, layers=common.parse_layers(layers, m.n_layers), test=test, seed=seed, C=C, template=template)
    out.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(out / "table.csv", index=False)
    io.write_json(out / "results.json", {"model": m.name, "test": test, "C": C, "seed": seed, "template": template,
                                         "table": result.table.to_dict("records"), "split": result.split})
    plot_truth_stability(result.table, title=f"{m.name}: truth probe stability").savefig(out / "truth.png")
    cols = ["layer", "accuracy", "flip_rate", "flip_rate_neither", "cosine"]
    typer.echo(result.table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    typer.echo(f"-> {out}")


def introspect(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for table.csv, trials.csv, results.json and a figure."),
    concepts: str | None = typer.Option(None, help="Comma-separated concept words (default: 12 built-in nouns)."),
    layers: str | None = typer.Option(None, help="Injection layers, e.g. 12,16,21,25 or -3--1 (default: 40/55/70/85% depth)."),
    strengths: str = typer.Option("1,2,4,8", help="Injection strengths s (h += s * v)."),
    trials: int = typer.Option(1, help="Injected trials per concept, layer and strength."),
    controls: int | None = typer.Option(None, help="Control trials without injection (default: one per concept "
                                                   "and trial)."),
    max_new_tokens: int = typer.Option(48, help="Tokens of each reply."),
    temperature: float = typer.Option(1.0, help="Sampling temperature (0: greedy)."),
    seed: int = typer.Option(0, help="Sampling seed."),
    judge_url: str | None = typer.Option(None, help="An OpenAI-compatible endpoint (…/v1) to grade with an LLM "
                                                    "judge instead of the offline rules."),
    judge_model: str = typer.Option("gpt-4o", help="The judge's model name."),
    judge_key: str | None = typer.Option(None, envvar="STEERLAB_JUDGE_KEY", help="The judge's API key "
                                                                               "(or STEERLAB_JUDGE_KEY)."),
    force: bool = typer.Option(False, help="Write into a non-empty --out."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
) -> None:
    """Concept injection: does the model notice and name a concept added to its residual stream?

    Rates of detection (injected trials), false alarms (control trials) and identification, per layer x strength,
    graded offline by rules (affirmation, then the concept word) unless --judge-url is given.

    Example:  steerlab introspect --model smollm2 --strengths 1,2,4,8 --out introspection/
    """
    from steerlab import io
    from steerlab.analysis.audit_figures import plot_introspection
    from steerlab.analysis.introspection import CONCEPTS, introspection
    from steerlab.evaluate.judge import OpenAIJudge

    values = _floats(strengths, "--strengths")
    words = [w.strip() for w in concepts.split(",") if w.strip()] if concepts else list(CONCEPTS)
    common.check_count(trials, "--trials")
    common.check_count(max_new_tokens, "--max-new-tokens")
    common.check_number(temperature, "--temperature", 0.0)
    judge = OpenAIJudge(judge_url, judge_model, judge_key) if judge_url else None
    _out_folder(out, force)
    m = common.load_model(model, dtype, device)
    layer_list = common.parse_layers(layers, m.n_layers) or sorted({round(f * m.n_layers) for f in (0.4, 0.55, 0.7,
                                                                                                     0.85)})
    started = time.perf_counter()
    result = introspection(m, words, layer_list, values, trials, controls, max_new_tokens=max_new_tokens,
                           temperature=temperature, seed=seed, judge=judge)
    out.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(out / "table.csv", index=False)
    result.trials.to_csv(out / "trials.csv", index=False)
    io.write_json(out / "results.json", {
        "model": m.name, "concepts": words, "layers": layer_list, "strengths": values, "trials": trials,
        "temperature": temperature, "max_new_tokens": max_new_tokens, "seed": seed,
        "grader": f"llm judge {judge_model} at {judge_url}" if judge_url else "rules (steerlab.analysis.introspection.grade)",
        "seconds": time.perf_counter() - started, "table": result.table.to_dict("records"),
        "norms": result.norms.to_dict("records"),
        "examples": result.trials.groupby(["layer", "strength"], dropna=False).head(1).to_dict("records")})
    plot_introspection(result.table, "detection").savefig(out / "detection.png")
    typer.echo(result.table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    typer.echo(f"-> {out}")


def lofit(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for lofit.steer, importance.csv, results.json and "
                                                      "baked/ (where the family allows)."),
    n_train: int = typer.Option(48, help="Arithmetic training questions (seeded generator, bundled)."),
    n_test: int = typer.Option(48, help="Held-out questions (another seed; none shared with training)."),
    fraction: float = typer.Option(0.03, help="Share of all heads kept by learned importance."),
    select_epochs: int = typer.Option(2, help="Epochs of the importance (scaling) training."),
    epochs: int = typer.Option(4, help="Epochs of the offset training."),
    lr: float = typer.Option(5e-3, help="Adam learning rate of both trainings."),
    l1: float = typer.Option(1e-3, help="L1 weight on the importance scalings."),
    batch_size: int = typer.Option(8, help="Questions per training step."),
    random_control: bool = typer.Option(False, help="Also train offsets on as many randomly chosen heads."),
    bake: bool = typer.Option(True, help="Bake the offsets into o_proj biases (refused for Gemma 2/3: recipe only)."),
    seed: int = typer.Option(0, help="Seed of the questions and the training order."),
    force: bool = typer.Option(False, help="Write into a non-empty --out."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
) -> None:
    """LoFiT: pick attention heads by learned importance, train per-head offsets on a task, bake them as biases.

    Task: two-number addition/subtraction questions (sl.evaluate.arithmetic_items); accuracy on held-out questions
    against the untuned model (greedy, chat template).

    Example:  steerlab lofit --model smollm2 --n-train 48 --fraction 0.03 --out lofit/
    """
    import random

    import steerlab as sl
    from steerlab import io
    from steerlab.edit.lofit import bake_lofit
    from steerlab.edit.lofit import lofit as train

    common.check_count(n_train, "--n-train", 2)
    common.check_count(n_test, "--n-test")
    common.check_number(fraction, "--fraction", 1e-6, 1.0)
    common.check_number(lr, "--lr", 1e-9)
    _out_folder(out, force)
    train_items = sl.evaluate.arithmetic_items(n_train, seed=1000 + seed)
    seen = {item.question for item in train_items}
    test_items = [i for i in sl.evaluate.arithmetic_items(4 * n_test, seed=2000 + seed) if i.question not in seen]
    test_items = list({i.question: i for i in test_items}.values())[:n_test]
    m = common.load_model(model, dtype, device)
    started = time.perf_counter()
    result = train(m, [i.question for i in train_items], [str(i.answer) for i in train_items], fraction=fraction,
                   select_epochs=select_epochs, epochs=epochs, select_lr=lr, lr=lr, l1=l1, batch_size=batch_size,
                   seed=seed)
    seconds = time.perf_counter() - started
    recipes: dict[str, Any] = {"untuned": None, "lofit": result.steering}
    control = None
    if random_control:
        rng = random.Random(seed)
        pool = [(layer, h) for layer in range(m.n_layers) for h in range(m.n_heads)]
        control = train(m, [i.question for i in train_items], [str(i.answer) for i in train_items],
                        heads=rng.sample(pool, len(result.heads)), epochs=epochs, lr=lr, batch_size=batch_size,
                        seed=seed)
        recipes["random heads"] = control.steering
    scorer = sl.evaluate.TaskAccuracy(test_items)
    accuracy = dict(zip(recipes, scorer.score(m, list(recipes.values()))["accuracy"]))
    out.mkdir(parents=True, exist_ok=True)
    result.steering.save(out / "lofit.steer", overwrite=force)
    result.importance.to_csv(out / "importance.csv", index=False)
    baked_note = "not asked"
    if bake:
        try:
            hf = bake_lofit(m, result)
            hf.save_pretrained(out / "baked")
            accuracy["lofit baked"] = sl.evaluate.TaskAccuracy(test_items).score(sl.Model(hf, m.tokenizer),
                                                                                  [None])["accuracy"][0]
            baked_note = f"o_proj biases -> {out / 'baked'}"
        except sl.edit.NotBakeableError as e:
            baked_note = f"kept as a recipe: {e}"
    io.write_json(out / "results.json", {
        "model": m.name, "task": "arithmetic_items (a ± b, 2..20)", "n_train": len(train_items),
        "n_test": len(test_items), "heads": result.heads, "fraction": fraction, "accuracy": accuracy,
        "losses": result.losses, "control_heads": control.heads if control else None,
        "control_losses": control.losses if control else None, "train_seconds": seconds, "baked": baked_note,
        "settings": {"select_epochs": select_epochs, "epochs": epochs, "lr": lr, "l1": l1, "batch_size": batch_size,
                     "seed": seed}})
    typer.echo(f"heads: {', '.join(f'L{a}H{b}' for a, b in result.heads)}")
    for name, value in accuracy.items():
        typer.echo(f"{name:>14}: accuracy {value:.3f} on {len(test_items)} held-out questions")
    typer.echo(f"bake: {baked_note}")
    typer.echo(f"-> {out}")


COMMANDS: dict[str, Callable[..., Any]] = {"lofit": lofit, "robustness": robustness, "truth-stability": truth_stability,
                                           "introspect": introspect}


def register(app: typer.Typer) -> None:
    """Add the audit commands to ``app``."""
    common.add_commands(app, COMMANDS)
