"""The audit commands: --help with an example, one-line errors before any model loads, tiny end-to-end runs."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from steerlab.cli import audits
from tiny import tiny_model

runner = CliRunner()


@pytest.fixture(scope="module")
def app():
    app = typer.Typer()
    audits.register(app)
    return app


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    model = tiny_model("llama")
    model.hf_model.config.max_position_embeddings = 1024  # the introspection trial prompt is long (byte-level tokens)
    model.hf_model.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("command", ["robustness", "introspect", "truth-stability", "lofit"])
def test_help_has_an_example(app, command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and f"steerlab {command}" in result.output


@pytest.mark.parametrize("args,message", [
    (["robustness", "--radii", "a,b", "--out", "x"], "--radii"),
    (["introspect", "--strengths", "", "--out", "x"], "--strengths"),
    (["introspect", "--trials", "0", "--out", "x"], "--trials"),
    (["truth-stability", "--test", "1.5", "--out", "x"], "--test"),
    (["lofit", "--fraction", "0", "--out", "x"], "--fraction"),
    (["introspect", "--judge-url", "localhost", "--out", "x"], "http"),
])
def test_bad_input_is_one_line_and_exit_2(app, args, message, tmp_path):
    result = runner.invoke(app, [a if a != "x" else str(tmp_path / "new") for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_a_non_empty_out_folder_is_refused(app, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["truth-stability", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--force" in result.output
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_truth_stability_and_introspect_run_end_to_end_on_a_tiny_model(app, model_dir, tmp_path):
    out = tmp_path / "truth"
    result = runner.invoke(app, ["truth-stability", "--model", model_dir, "--layers", "0-2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    assert [row["layer"] for row in saved["table"]] == [0, 1, 2] and (out / "truth.png").exists()
    out = tmp_path / "intro"
    result = runner.invoke(app, ["introspect", "--model", model_dir, "--concepts", "ab,cd", "--layers", "1",
                                 "--strengths", "2", "--max-new-tokens", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["table"]) == 1 and saved["table"][0]["n"] == 2 and (out / "detection.png").exists()
