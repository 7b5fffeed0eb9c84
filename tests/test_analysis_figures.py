"""Every figure function draws a PNG from its analysis table and refuses tables it cannot read."""

from __future__ import annotations

import pytest
import torch

import steerlab as sl


def _png(fig, tmp_path, name):
    path = tmp_path / f"{name}.png"
    fig.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_draw(tiny_llama, tmp_path):
    model = tiny_llama
    A = sl.analysis
    _png(A.plot_lens(A.logit_lens(model, "hello", target="x", positions="all")), tmp_path, "lens")
    table = A.probe_map(model, ["hello", "abc"], (torch.randn(model.d_model), 0.0), generate=3)
    _png(A.plot_probe_map(table, text=0), tmp_path, "map1")
    _png(A.plot_probe_map(table), tmp_path, "map_mean")
    _png(A.plot_trace([A.probe_trace(table, layer=1)], labels=["toy"]), tmp_path, "trace")
    _png(A.plot_patching(A.activation_patching(model, "abcd", "abce", gold="x", sites=["resid_post", "mlp_out"],
                                               mode="both")), tmp_path, "patch")
    _png(A.plot_heads(A.head_attribution(model, "abcd", answers=("x", "y"))), tmp_path, "heads")
    spans = A.step_spans(model, ["ab\ncd="])
    _png(A.plot_necessity(A.necessity_metrics(A.step_interventions(model, ["ab\ncd="], "xy", spans, modes=("zero",)))),
         tmp_path, "do")
    check = A.subspace_check(model, "abcd", "abce", torch.randn(model.d_mlp), 1, gold="x")
    _png(A.plot_subspace(check), tmp_path, "subspace")


def test_figures_refuse_the_wrong_table(tiny_llama):
    table = sl.analysis.logit_lens(tiny_llama, "hello", positions="all")
    with pytest.raises(sl.SteerlabError, match="target"):
        sl.analysis.plot_lens(table)
    with pytest.raises(sl.SteerlabError, match="columns"):
        sl.analysis.plot_patching(table)
