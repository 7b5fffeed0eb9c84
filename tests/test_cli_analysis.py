"""The lens / probe-map / patch / heads commands on a tiny Typer app (a tiny model saved to disk), plus one
run on the embedded model."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from steerlab.cli import analysis as cli_analysis
from steerlab.cli import common
from tiny import tiny_model

runner = CliRunner()


@pytest.fixture(scope="module")
def app():
    app = typer.Typer()
    cli_analysis.register(app)
    return app


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    model = tiny_model("llama")
    model.hf_model.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    return str(folder)


def test_every_command_has_help_with_an_example(app):
    for command in ("lens", "probe-map", "patch", "heads"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Example: steerlab" in result.output


def test_lens_writes_table_and_figure(app, model_dir, tmp_path):
    result = runner.invoke(app, ["lens", "hello", "--target", "x", "--contrast", "jello", "--contrast-target", "y",
                                 "--model", model_dir, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "commitment layer" in result.output
    table = pd.read_csv(tmp_path / "lens.csv")
    assert len(table) == 3 * 5 and (tmp_path / "lens.png").stat().st_size > 0
    assert (tmp_path / "commitment.csv").is_file()


def test_patch_and_heads(app, model_dir, tmp_path):
    result = runner.invoke(app, ["patch", "--clean", "abcd", "--corrupted", "abce", "--answers", "x", "y",
                                 "--sites", "resid_post", "--mode", "both", "--model", model_dir, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "patching.csv")) == 2 * 3 * 4
    result = runner.invoke(app, ["heads", "abcd", "--answers", "x", "y", "--contrast", "abce", "--model", model_dir,
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    heads = pd.read_csv(tmp_path / "heads.csv")
    assert {"dla", "ablation_effect", "interchange"} <= set(heads.columns) and len(heads) == 3 * 4


def test_probe_map_on_a_jsonl_data_set(app, model_dir, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps({"positive": f"good {c}", "negative": f"bad {c}"}) for c in "abcdefgh"))
    result = runner.invoke(app, ["probe-map", "--data", str(data), "--layer", "1", "--generate", "2", "--n", "2",
                                 "--model", model_dir, "--out", str(tmp_path / "pm")])
    assert result.exit_code == 0, result.output
    trace = pd.read_csv(tmp_path / "pm" / "trace.csv")
    assert set(trace["group"]) == {"positive", "negative"}
    assert (tmp_path / "pm" / "probe_map.png").is_file() and (tmp_path / "pm" / "trace.png").is_file()


def test_patch_steps_and_subspace_modes(app, model_dir, tmp_path):
    import torch

    result = runner.invoke(app, ["patch", "--steps", "--clean", "ab\ncd=", "--clean", "ef\ngh=", "--gold", "xy",
                                 "--step-modes", "zero,mean", "--model", model_dir, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "do_interventions.csv")
    assert len(table) == 2 * 2 * 2 and (tmp_path / "necessity.png").is_file()
    torch.save(torch.randn(96), tmp_path / "v.pt")
    result = runner.invoke(app, ["patch", "--clean", "abcd", "--corrupted", "abce", "--gold", "x", "--subspace",
                                 str(tmp_path / "v.pt"), "--layer", "1", "--model", model_dir, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(tmp_path / "subspace.csv")["part"]) == ["direction", "row_space", "null_space", "component"]


@pytest.mark.parametrize("args, message", [
    (["patch", "--clean", "abc", "--corrupted", "abcd", "--gold", "x"], "same token length"),
    (["lens", "hello", "--target", "xy"], "single token"),
    (["lens", "hello", "--target", "x", "--layers", "1-z"], "--layers"),
    (["probe-map", "--data", "no-such-set"], "--data"),
    (["heads", "abc", "--answers", "x", "y", "--ablate", "half"], "--ablate"),
    (["patch", "--clean", "abc", "--gold", "x"], "--corrupted"),
    (["patch", "--steps", "--clean", "abc"], "--gold"),
    (["patch", "--clean", "abc", "--corrupted", "abd", "--gold", "x", "--subspace", "v.pt", "--layer", "9"], "out of range"),
    (["patch", "--clean", "abc", "--corrupted", "abd", "--gold", "x", "--subspace", "nope.pt"], "--subspace"),
])
def test_bad_input_exits_2_with_one_line(app, model_dir, tmp_path, args, message):
    result = runner.invoke(app, args + ["--model", model_dir, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_layers_negative_and_out_of_range(app, model_dir, tmp_path):
    result = runner.invoke(app, ["lens", "hello", "--target", "x", "--layers", "-2--1", "--model", model_dir,
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(set(pd.read_csv(tmp_path / "lens.csv")["layer"])) == [1, 2]
    bad = runner.invoke(app, ["heads", "abc", "--answers", "x", "y", "--layers", "0,3", "--model", model_dir,
                              "--out", str(tmp_path)])
    assert bad.exit_code == 2
    assert bad.output.strip() == "error: --layers '0,3' is out of range: the model has 3 layers (0-2)"


@pytest.mark.slow
def test_embedded_lens_command(app, smollm, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "load_model", lambda *a, **k: smollm)
    result = runner.invoke(app, ["lens", "The capital of France is", "--target", " Paris", "--positions", "last",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "top-1 ' Paris'" in result.output and "rank 1" in result.output
