"""The analysis commands: ``lens``, ``probe-map``, ``patch`` and ``heads``.

Each writes its table as CSV and its figure as PNG to ``--out``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import typer

from ..errors import SteerlabError
from . import common
from .common import DEVICE, DTYPE, FORCE, LAYERS_HELP, MODEL, layer_spec, one_layer, parse_layers

LAYERS = f"Layers (default all): {LAYERS_HELP}."


def _out_dir(out: Path, force: bool, *names: str) -> Path:
    """The --out folder, created; refuse it when it already holds one of this command's ``names``
    (``<name>.csv``/``.png``) unless --force (other files there are never touched)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SteerlabError(f"--out {str(out)!r} is a file; give a folder")
    found = [f"{n}{ext}" for n in names for ext in (".csv", ".png") if (out / f"{n}{ext}").exists()]
    if found and not force:
        raise SteerlabError(f"--out {str(out)!r} already holds {', '.join(found)} from an earlier run; "
                            "pass --force to replace them, or give another folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _positions(text: str) -> Literal["all", "last"] | list[int]:
    if text == "all":
        return "all"
    if text == "last":
        return "last"
    try:
        return [int(p) for p in text.split(",")]
    except ValueError:
        raise SteerlabError(f"--positions {text!r} is not allowed; use 'all', 'last' or a list like '0,3,-1'") from None


def _write(out: Path, name: str, table: Any, fig: Any = None) -> list[str]:
    from .. import io

    written = [str(io.atomic_write_text(out / f"{name}.csv", table.to_csv(index=False)))]
    if fig is not None:
        written.append(str(io.atomic_write(out / f"{name}.png", lambda tmp: fig.savefig(tmp, dpi=100, format="png"))))
    return written


def lens(text: str = typer.Argument(..., help="The prompt, e.g. 'The capital of France is'."),
         target: str = typer.Option(..., "--target", "-t", help="A single-token answer, e.g. ' Paris'."),
         contrast: str | None = typer.Option(None, help="A contrast prompt of the same token length."),
         contrast_target: str | None = typer.Option(None, help="The contrast prompt's answer, e.g. ' Rome'."),
         positions: str = typer.Option("all", help="'all', 'last' or indices like '0,3,-1'."),
         layers: str | None = typer.Option(None, help=LAYERS),
         k: int = typer.Option(5, help="How many top tokens to list."),
         chat: bool = typer.Option(False, help="Apply the chat template to the prompt."),
         model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
         out: Path = typer.Option(Path("runs/lens"), help="Folder for lens.csv and lens.png."),
         force: bool = FORCE) -> None:
    """Logit lens: every layer's top tokens and the target's rank; prints the commitment layer.

    Example: steerlab lens "The capital of France is" --target " Paris" --out runs/lens
    """
    from steerlab import analysis

    where = _positions(positions)
    layer_spec(layers)
    out = _out_dir(out, force, "lens", "commitment")
    m = common.load_model(model, dtype, device)
    table = analysis.logit_lens(m, text, target=target, positions=where, layers=parse_layers(layers, m.n_layers),
                                k=k, chat=chat)
    files = _write(out, "lens", table, analysis.plot_lens(table))
    if contrast is not None or contrast_target is not None:
        found = analysis.commitment_layer(m, text, target, contrast=contrast, contrast_target=contrast_target, chat=chat)
        files += _write(out, "commitment", found.table)
        typer.echo(f"commitment layer (logit lens): {found.layer}; (patching test): {found.patch_layer}")
    else:
        typer.echo(f"commitment layer (logit lens): {analysis.lens_commitment(table)}")
    last = table[(table["layer"] == table["layer"].max()) & (table["position"] == table["position"].max())].iloc[0]
    typer.echo(f"last layer, last token: top-1 {last['top1']!r} (p={last['top1_prob']:.3f}); "
               f"{target!r} rank {last['target_rank']}")
    typer.echo("wrote " + ", ".join(files))


def probe_map(
        texts: list[str] | None = typer.Argument(None, help="Texts to score (default: held-out pairs of --data)."),
        data: str = typer.Option("refusal", help="Bundled contrastive set or a .jsonl/.csv of positive/negative pairs."),
        layer: int = typer.Option(15, help="The layer the probe is fit on (negative counts from the end)."),
        per_layer: bool = typer.Option(False, help="Fit one probe per layer instead of reading one probe everywhere."),
        generate: int = typer.Option(0, help="Continue each text by up to N greedy tokens and score those too."),
        n: int = typer.Option(8, help="Held-out texts per side when no texts are given."),
        c: float = typer.Option(0.01, "--C", help="Inverse regularisation strength of the logistic regression."),
        chat: bool = typer.Option(True, help="Apply the chat template (fit and scoring)."),
        model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
        out: Path = typer.Option(Path("runs/probe-map"), help="Folder for the CSVs and PNGs."),
        force: bool = FORCE) -> None:
    """Probe map: fit a probe on --data, score every layer x token (generated tokens too), plot the trace.

    Example: steerlab probe-map --data refusal --layer 15 --generate 24 --out runs/probe-map
    """
    import pandas as pd

    from steerlab import analysis

    pairs = common.load_pairs(data)
    out = _out_dir(out, force, "probe_map", "trace")
    m = common.load_model(model, dtype, device)
    fixed = one_layer(layer, m.n_layers)
    train, held = pairs.split(0.25, seed=0)
    probe = analysis.fit_probe(m, train, layers="all" if per_layer else fixed, C=c, chat=chat)
    if per_layer:
        probe.layer = fixed
    groups = {"texts": list(texts)} if texts else {"positive": held.positive[:n], "negative": held.negative[:n]}
    tables, traces = [], []
    offset = 0
    for name, group in groups.items():
        table = analysis.probe_map(m, group, probe, generate=generate, chat=chat)
        table["group"] = name
        table["text"] += offset
        offset += len(group)
        tables.append(table)
        traces.append(analysis.probe_trace(table, layer=probe.layer).assign(group=name))
    table = pd.concat(tables, ignore_index=True)
    table.attrs["probe_layer"] = probe.layer
    trace = pd.concat(traces, ignore_index=True)
    first = tables[0]
    files = _write(out, "probe_map", table, analysis.plot_probe_map(first, text=int(first["text"].min()), window=64,
                                                                    title=f"Probe map of {groups[next(iter(groups))][0]!r}"))
    files += _write(out, "trace", trace, analysis.plot_trace(traces, labels=list(groups),
                                                             title=f"{pairs.name} probe (layer {probe.layer})"))
    acc = probe.meta["train_accuracy"].get(probe.layer)
    typer.echo(f"probe on {pairs.name} at layer {probe.layer}: train accuracy {acc:.2f}")
    typer.echo("wrote " + ", ".join(files))


def _vector(path: Path, layer: int) -> Any:
    """A direction from a saved Direction folder (its vector at ``layer``), a ``.pt`` tensor or a ``.npy`` array."""
    import torch

    path = Path(path)
    if not path.exists():
        raise SteerlabError(f"--subspace {str(path)!r}: no such file or folder")
    if path.is_dir() or path.suffix == ".direction":
        from steerlab import Direction

        return Direction.load(path)[layer]
    if path.suffix == ".npy":
        import numpy as np

        return torch.as_tensor(np.load(path), dtype=torch.float32)
    if path.suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=True)
    raise SteerlabError(f"--subspace {str(path)!r}: use a saved Direction folder, a .pt tensor or a .npy array")


def patch(clean: list[str] = typer.Option(..., help="Clean prompt(s); repeat for several pairs."),
          corrupted: list[str] | None = typer.Option(None, help="Corrupted prompt(s), same token length as the clean ones."),
          answers: tuple[str, str] | None = typer.Option(None, help="Two single-token answers: clean, corrupted."),
          gold: list[str] | None = typer.Option(None, help="Score log p(gold) instead (with --steps: the answer "
                                                   "text); one, or one per --clean."),
          sites: str = typer.Option("resid_post,attn_out,mlp_out", help="Comma-separated site kinds."),
          layers: str | None = typer.Option(None, help=LAYERS),
          mode: str = typer.Option("denoise", help="'denoise' (clean into corrupted), 'noise' or 'both'."),
          steps: bool = typer.Option(False, "--steps", help="Step-wise do-interventions on the clean prompt(s) instead: "
                                     "steps split at --sep, --gold is the answer."),
          sep: str = typer.Option("\\n", help="Step separator for --steps (escapes like \\n are read)."),
          step_modes: str = typer.Option("zero,mean,step_mean,add_noise", help="Do-intervention modes for --steps."),
          subspace: Path | None = typer.Option(None, help="Subspace-illusion check of this direction (a Direction "
                                                  "folder, .pt or .npy) instead of the sweep."),
          layer: int = typer.Option(-1, help="Layer of the --subspace check (negative counts from the end)."),
          site: str = typer.Option("mlp.neurons", help="Site of the --subspace check."),
          chat: bool = typer.Option(False, help="Apply the chat template to the prompts."),
          model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
          out: Path = typer.Option(Path("runs/patch"), help="Folder for the CSV and PNG."),
          force: bool = FORCE) -> None:
    """Activation patching sweep over sites x layers x positions, with a heatmap; --steps runs step-wise
    do-interventions and --subspace the subspace-illusion check.

    Example: steerlab patch --clean "The capital of France is" --corrupted "The capital of Italy is"
    --answers " Paris" " Rome" --out runs/patch
    """
    from steerlab import analysis

    layer_spec(layers)
    written = ("do_interventions", "necessity") if steps else ("subspace",) if subspace is not None else ("patching",)
    out = _out_dir(out, force, *written)
    score: str | list[str] | None = (gold[0] if len(gold) == 1 else list(gold)) if gold else None
    if steps:
        if score is None:
            raise SteerlabError("--steps needs --gold, the answer that follows the prompt (e.g. ' Germany')")
        m = common.load_model(model, dtype, device)
        separator = sep.encode().decode("unicode_escape")
        spans = analysis.step_spans(m, clean, sep=separator)
        table = analysis.step_interventions(m, clean, score, spans,
                                            modes=tuple(x.strip() for x in step_modes.split(",")),
                                            layers=parse_layers(layers, m.n_layers), chat=chat)
        summary = analysis.necessity_metrics(table)
        files = _write(out, "do_interventions", table) + _write(out, "necessity", summary,
                                                                 analysis.plot_necessity(summary))
        typer.echo(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        typer.echo("wrote " + ", ".join(files))
        return
    if not corrupted:
        raise SteerlabError("--corrupted is required (one per --clean), unless --steps is given")
    m = common.load_model(model, dtype, device)
    if subspace is not None:
        fixed = one_layer(layer, m.n_layers)
        check = analysis.subspace_check(m, corrupted, clean, _vector(subspace, fixed), fixed, site=site,
                                        answers=answers, gold=score, chat=chat)
        files = _write(out, "subspace", check.table, analysis.plot_subspace(check))
        typer.echo("\n".join(check.reasons))
        typer.echo("wrote " + ", ".join(files))
        return
    table = analysis.activation_patching(m, clean, corrupted, answers=answers, gold=score,
                                         sites=[s.strip() for s in sites.split(",") if s.strip()],
                                         layers=parse_layers(layers, m.n_layers), mode=mode, chat=chat)
    files = _write(out, "patching", table, analysis.plot_patching(table))
    top = analysis.patching_summary(table).sort_values("normalized", ascending=False).head(5)
    for row in top.itertuples():
        typer.echo(f"{row.mode} {row.site} layer {row.layer} position {row.position}: normalized {row.normalized:.2f}")
    typer.echo("wrote " + ", ".join(files))


def heads(text: list[str] = typer.Argument(..., help="Prompt(s) to attribute."),
          answers: tuple[str, str] = typer.Option(..., help="Two single-token answers: logit(a) - logit(b)."),
          contrast: list[str] | None = typer.Option(None, help="Contrast prompt(s) for the interchange audit."),
          ablate: str = typer.Option("zero", help="'zero', 'mean' or 'none' (skip the ablation sweep)."),
          renorm: bool = typer.Option(False, help="Keep the attention output's norm when zeroing heads."),
          layers: str | None = typer.Option(None, help=LAYERS),
          top: int = typer.Option(10, help="How many heads to print."),
          chat: bool = typer.Option(False, help="Apply the chat template to the prompts."),
          model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
          out: Path = typer.Option(Path("runs/heads"), help="Folder for heads.csv and heads.png."),
          force: bool = FORCE) -> None:
    """Heads: direct logit attribution, ablation effect and (with --contrast) interchange, per head.

    Example: steerlab heads "The capital of France is" --answers " Paris" " Rome"
    --contrast "The capital of Italy is" --out runs/heads
    """
    from steerlab import analysis

    if ablate not in ("zero", "mean", "none"):
        raise SteerlabError(f"--ablate {ablate!r} is not allowed; use 'zero', 'mean' or 'none'")
    layer_spec(layers)
    out = _out_dir(out, force, "heads")
    m = common.load_model(model, dtype, device)
    layer_list = parse_layers(layers, m.n_layers)
    table = analysis.head_attribution(m, text, answers=answers, layers=layer_list, chat=chat)
    table = table.rename(columns={"score": "dla", "std": "dla_std", "rank": "dla_rank"}).drop(columns="texts")
    if ablate != "none":
        ab = analysis.head_ablation(m, text, answers=answers, mode=ablate, renorm=renorm, layers=layer_list, chat=chat)
        table = table.merge(ab[["layer", "head", "effect"]].rename(columns={"effect": "ablation_effect"}),
                            on=["layer", "head"])
    if contrast:
        ic = analysis.head_interchange(m, contrast, text, answers=answers, layers=layer_list, chat=chat)
        table = table.merge(ic[["layer", "head", "normalized"]].rename(columns={"normalized": "interchange"}),
                            on=["layer", "head"])
    table = table.sort_values("dla_rank").reset_index(drop=True)
    files = _write(out, "heads", table, analysis.plot_heads(table, value="dla",
                                                            title=f"Direct logit attribution: {answers[0]!r} - {answers[1]!r}"))
    typer.echo(table.head(top).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    typer.echo("wrote " + ", ".join(files))


COMMANDS: dict[str, Callable[..., Any]] = {"lens": lens, "probe-map": probe_map, "patch": patch, "heads": heads}


def register(app: typer.Typer) -> None:
    """Add ``lens``, ``probe-map``, ``patch`` and ``heads`` to ``app``."""
    common.add_commands(app, COMMANDS)
