"""The audit's files: ``selection.csv``, ``signals.csv``, figures (accuracy vs tokens, AUROC per layer,
trajectories of right vs wrong samples) and a single-file ``report.html``."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..report import html
from .evaluation import Record
from .signals import LT_SIGNALS


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _mean_curve(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Mean over ragged ``rows`` at each index, where at least 3 rows reach it (else all rows)."""
    width = max(len(r) for r in rows)
    grid = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        grid[i, : len(r)] = r
    reached = (~np.isnan(grid)).sum(0)
    if (reached >= 3).any():
        grid[:, reached < 3] = np.nan
    with warnings.catch_warnings():  # an index no row reaches is NaN, which the plot leaves out
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(grid, 0)


def latent_trajectory_figure(records: Sequence[Record]):
    """Running LT signals (each prefix's Net, Cumulative and Aligned Change, mean over layers) against
    segments closed, mean of right vs wrong samples: where the two kinds of trace part in latent space."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(LT_SIGNALS), figsize=(10, 3.2))
    for k, (name, ax) in enumerate(zip(LT_SIGNALS, axes)):
        for correct, colour in ((True, "tab:green"), (False, "tab:red")):
            rows = [r.lt_prefix[:, k] for r in records
                    if r.correct == correct and r.lt_prefix is not None and len(r.lt_prefix) > 1]
            if rows:
                curve = _mean_curve(rows)
                ax.plot(np.arange(2, len(curve) + 1), curve[1:], ".-", color=colour,
                        label=f"{'right' if correct else 'wrong'} ({len(rows)})")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("segments so far")
    axes[0].legend(fontsize=7)
    return fig


def figures(results: dict, records: Sequence[Record]) -> dict[str, bytes]:
    """PNG figures by file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = pd.DataFrame(results["selection"])
    out = {}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    mv = sel[sel.selector.str.startswith("majority@")]
    ax.plot(mv.tokens, mv.accuracy, "k.-", label="majority@k")
    for _, r in sel[~sel.selector.str.startswith("majority@")].iterrows():
        ax.errorbar(r.tokens, r.accuracy, yerr=[[r.accuracy - r.ci_low], [r.ci_high - r.accuracy]], fmt="o",
                    ms=4, alpha=0.7)
        ax.annotate(r.selector, (r.tokens, r.accuracy), fontsize=6)
    ax.set_xlabel("tokens per question")
    ax.set_ylabel("accuracy (held-out questions)")
    ax.legend(loc="lower right")
    out["accuracy_vs_tokens.png"] = _png(fig)

    sig = pd.DataFrame(results["signals"])
    layered = sig[sig.layer != "all"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, part in layered.groupby("signal"):
        ax.plot(part.layer.astype(int), part.auroc, ".-", label=name)
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set_xlabel("layer")
    ax.set_ylabel("AUROC (correct)")
    ax.legend(fontsize=7)
    out["auroc_per_layer.png"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for correct, colour in ((True, "tab:green"), (False, "tab:red")):
        confs = [r.confidence for r in records if r.correct == correct]
        if not confs:
            continue
        ax.plot(_mean_curve(confs), color=colour, label=f"{'right' if correct else 'wrong'} ({len(confs)} samples)")
    ax.set_xlabel("generated token")
    ax.set_ylabel("token confidence (mean)")
    ax.legend()
    out["confidence_trajectories.png"] = _png(fig)
    out["latent_trajectories.png"] = _png(latent_trajectory_figure(records))
    return out


def write_report(folder: Path, results: dict, records: Sequence[Record]) -> None:
    """Write the CSVs, figures and ``report.html`` of an audit into ``folder``."""
    sel = pd.DataFrame(results["selection"])
    sig = pd.DataFrame(results["signals"])
    sel.to_csv(folder / "selection.csv", index=False)
    sig.to_csv(folder / "signals.csv", index=False)
    figs = figures(results, records)
    (folder / "figures").mkdir()
    for name, png in figs.items():
        (folder / "figures" / name).write_bytes(png)
    settings = {k: v for k, v in results.items() if k not in ("selection", "signals")}
    sections = [
        ("Selection on held-out questions", html.table(sel, text_columns=["selector"])),
        ("Accuracy vs tokens", html.figure(figs["accuracy_vs_tokens.png"], "accuracy vs tokens")),
        ("AUROC of each signal", html.table(sig[sig.layer == "all"], text_columns=["signal", "layer"])),
        ("AUROC per layer", html.figure(figs["auroc_per_layer.png"], "AUROC per layer")),
        ("Right vs wrong samples: token confidence",
         html.figure(figs["confidence_trajectories.png"], "confidence trajectories")),
        ("Right vs wrong samples: latent trajectory signals of each prefix",
         html.figure(figs["latent_trajectories.png"], "latent trajectories")),
        ("Settings", html.pre(settings)),
    ]
    page = html.page(f"Reasoning audit: {results['model']} on {results['task']}", sections)
    (folder / "report.html").write_text(page, encoding="utf-8")
