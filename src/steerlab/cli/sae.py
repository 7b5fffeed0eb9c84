"""``steerlab sae train|features|steer``: train an SAE on a capture, read its features, steer with them."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import DataError
from . import common
from .common import DEVICE, DTYPE, MODEL, check_count, check_number, console, fail

sae_app = typer.Typer(name="sae", help="Sparse autoencoders: train on a capture, read features, steer with them.\n\n"
                                       "Example:  steerlab sae train --store acts/ --out my.sae",
                      no_args_is_help=True, rich_markup_mode="rich")


def _pairs(values: list[str], option: str) -> dict[int, float]:
    """``["12=5.0", "40=0"]`` -> ``{12: 5.0, 40: 0.0}``; one line naming ``option`` otherwise."""
    out: dict[int, float] = {}
    for value in values:
        feature, sep, number = value.partition("=")
        try:
            if not sep:
                raise ValueError
            out[int(feature)] = float(number)
        except ValueError:
            raise DataError(f"{option} {value!r} must be FEATURE=NUMBER, e.g. {option} 12=5.0") from None
    return out


def train(
    store: Path = typer.Option(..., help="A capture folder (`steerlab capture --positions all ...`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the SAE (SAELens format: cfg.json + weights)."),
    site: str | None = typer.Option(None, help="Site to train on (default: the store's only site)."),
    d_sae: int = typer.Option(2048, help="Number of features."),
    architecture: str = typer.Option("topk", help="topk or standard (ReLU + L1)."),
    k: int = typer.Option(32, help="Active features per token (topk)."),
    l1: float = typer.Option(5.0, help="L1 coefficient (standard)."),
    epochs: int = typer.Option(2, help="Passes over the store."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    batch_size: int = typer.Option(512, help="Rows per step."),
    checkpoint: Path | None = typer.Option(None, help="Folder for resumable checkpoints (rerun to resume)."),
    seed: int = typer.Option(0, help="Seed of the initialisation and the shuffle."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it is an SAE folder."),
) -> None:
    """Train an SAE on a capture store, streaming its shards; prints its metrics on the store.

    Example:  steerlab capture --texts texts.txt --sites layers.15.resid_post --positions all --out acts/
              steerlab sae train --store acts/ --out l15.sae --d-sae 2048 --k 32 --checkpoint ckpt/
    """
    from ..activations import DiskActivations
    from ..io import check_owned
    from ..sae.format import is_sae_folder
    from ..sae.metrics import reconstruction_metrics
    from ..sae.train import train_sae

    check_owned(out, is_sae_folder, force, "SAE", flag="--force")
    check_number(lr, "--lr", 1e-9, 1.0)
    acts = DiskActivations(store)
    result = train_sae(acts, site, checkpoint=checkpoint, progress=True, d_sae=d_sae, architecture=architecture,
                       k=k, l1_coefficient=l1, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    result.sae.save(out, overwrite=force)
    m = reconstruction_metrics(result.sae, acts)
    console.print(f"trained {result.sae!r} in {result.steps} steps ({result.seconds:.0f} s) -> {out}")
    console.print(f"on the store: MSE {m['mse']:.4g}, explained variance {m['explained_variance']:.3f}, "
                  f"L0 {m['l0']:.1f}, dead features {m['dead_fraction']:.1%} ({m['rows']} rows)")


def features(
    sae: Path = typer.Option(..., help="An SAE folder (SAELens format)."),
    texts: Path | None = typer.Option(None, help="A .txt (one per line), .jsonl or .json file of texts to search."),
    data: str | None = typer.Option(None, help="A contrastive set (e.g. sentiment): rank features by how much more "
                                               "they fire on its positive side."),
    feature: list[int] = typer.Option([], "--feature", "-f", help="A feature to show (repeat); default: the top "
                                                                  "--top of the ranking (with --data)."),
    top: int = typer.Option(10, help="With --data: how many ranked features to show."),
    k: int = typer.Option(3, help="Top texts per feature."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
) -> None:
    """Show features' top activating texts, or rank features by a contrastive set.

    Example:  steerlab sae features --sae l15.sae --data sentiment --texts texts.txt --top 5
    """
    import steerlab as sl

    from ..sae.features import contrast_features, top_texts
    from .core import read_texts

    check_count(top, "--top")
    check_count(k, "--k")
    loaded = sl.sae.load(sae)
    if not feature and data is None:
        fail("give --feature N (repeat for several) or --data NAME to rank features")
    pairs = common.load_pairs(data) if data is not None else None
    items = read_texts(texts) if texts is not None else None
    m = common.load_model(model, dtype, device)
    ranked: dict[int, float] = {}
    chosen = list(feature)
    if pairs is not None:
        ranking = contrast_features(m, loaded, pairs.positive, pairs.negative)
        ranked = dict(ranking[:top])
        chosen = chosen or [f for f, _ in ranking[:top]]
    examples = top_texts(m, loaded, items if items is not None else (pairs.positive + pairs.negative if pairs
                                                                      else []), chosen, k=k, progress=True)
    if as_json:
        console.print_json(json.dumps({str(f): {"contrast": ranked.get(f), "top": examples[f]} for f in chosen}))
        return
    for f in chosen:
        head = f"feature {f}" + (f"  (contrast {ranked[f]:+.3f})" if f in ranked else "")
        console.print(f"[bold]{head}[/]", highlight=False)
        for row in examples[f] or [{"activation": 0.0, "token": "", "text": "(never fires on these texts)"}]:
            console.print(f"  {row['activation']:8.2f}  {row['token']!r:>12}  {row['text'][:90]}", highlight=False,
                          markup=False)


def steer(
    sae: Path = typer.Option(..., help="An SAE folder (SAELens format)."),
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="A prompt (repeat for several)."),
    feature: int | None = typer.Option(None, "--feature", "-f", help="Add this feature's decoder direction."),
    alpha: float = typer.Option(8.0, help="Strength of --feature (a unit direction times alpha)."),
    clamp: list[str] = typer.Option([], help="FEATURE=VALUE: clamp a feature in the SAE basis (repeat)."),
    scale: list[str] = typer.Option([], help="FEATURE=FACTOR: scale a feature in the SAE basis (repeat)."),
    max_new_tokens: int = typer.Option(48, help="Tokens to generate."),
    compare: bool = typer.Option(False, help="Also show the unsteered output."),
    save_recipe: Path | None = typer.Option(None, help="Write the recipe used to this folder."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
    force: bool = typer.Option(False, "--force", help="Let --save-recipe replace an earlier recipe there."),
) -> None:
    """Generate steered by SAE features: add a feature's direction, or clamp/scale features in the SAE basis
    (the reconstruction error is kept, so untouched features stay exact).

    Example:  steerlab sae steer --sae l15.sae --feature 123 --alpha 40 -p "Tell me about your day." --compare
              steerlab sae steer --sae l15.sae --clamp 123=30 --scale 77=0 -p "Tell me about your day."
    """
    import steerlab as sl

    loaded = sl.sae.load(sae)
    edits_c, edits_s = _pairs(clamp, "--clamp"), _pairs(scale, "--scale")
    if (feature is None) == (not edits_c and not edits_s):
        fail("give either --feature N (with --alpha) or --clamp/--scale FEATURE=NUMBER")
    check_number(alpha, "--alpha", -1e4, 1e4)
    check_count(max_new_tokens, "--max-new-tokens")
    if feature is not None:
        item: sl.Intervention = sl.Add(loaded.feature(feature), alpha=alpha)
    else:
        item = sl.sae.SAEEdit(loaded, clamp=edits_c, scale=edits_s)
    recipe = sl.Steering([item])
    if save_recipe is not None:
        from ..interventions.steering import FORMAT, MARKER
        from ..io import check_target

        check_target(save_recipe, MARKER, FORMAT, force, "steering recipe")
    m = common.load_model(model, dtype, device)
    if loaded.d_in != m.d_model:
        raise DataError(f"--sae reads width {loaded.d_in}, but {model} has width {m.d_model}; "
                        "was it trained for another model?")
    out = m.generate(prompt, steering=recipe, max_new_tokens=max_new_tokens)
    base = m.generate(prompt, max_new_tokens=max_new_tokens) if compare else None
    for i, p in enumerate(prompt):
        console.print(f"[bold]> {p}[/]", highlight=False)
        if base is not None:
            console.print("unsteered: " + base.texts[i], highlight=False, markup=False)
            console.print("steered:   " + out.texts[i], highlight=False, markup=False)
        else:
            console.print(out.texts[i], highlight=False, markup=False)
    if save_recipe is not None:
        recipe.save(save_recipe, overwrite=force)
        console.print(f"recipe -> {save_recipe}")


def register(app: typer.Typer) -> None:
    """Add the ``sae`` command group (train, features, steer) to ``app``."""
    common.add_commands(sae_app, {"train": train, "features": features, "steer": steer})
    app.add_typer(sae_app, name="sae")
