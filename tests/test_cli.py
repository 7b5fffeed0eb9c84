"""The command line: --help with an example everywhere, one-line errors with exit code 2, real runs."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from steerlab.cli import app

runner = CliRunner()


def commands():
    import typer.main

    return sorted(typer.main.get_command(app).commands)


@pytest.mark.parametrize("name", commands())
def test_every_command_has_help_with_an_example(name):
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output and "steerlab " in result.output


@pytest.mark.parametrize("args, message", [
    (["extract", "--data", "no-such-set", "--out", "x"], "no-such-set"),
    (["extract", "--method", "magic", "--out", "x"], "--method"),
    (["capture", "--out", "x"], "exactly one of"),
    (["capture", "--texts", "/no/such/file.txt", "--out", "x"], "no file"),
    (["steer", "-p", "hi"], "exactly one of"),
    (["steer", "-p", "hi", "--direction", "/no/such.direction"], "no direction"),
    (["demo", "--strengths", ","], "strengths"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert "Traceback" not in result.output


def test_extract_then_steer_end_to_end(tmp_path, smollm, monkeypatch):
    from steerlab.cli import common

    monkeypatch.setattr(common, "load_model", lambda *a, **k: smollm)
    d = tmp_path / "happy.direction"
    result = runner.invoke(app, ["extract", "--data", "sentiment", "--layers", "10-12", "--out", str(d)])
    assert result.exit_code == 0, result.output
    assert (d / "vectors.safetensors").is_file()
    result = runner.invoke(app, ["steer", "--direction", str(d), "--alpha", "1.0", "-p", "Tell me about your day.",
                                 "--max-new-tokens", "8", "--compare", "--save-recipe", str(tmp_path / "r.steer")])
    assert result.exit_code == 0, result.output
    assert "steered:" in result.output and "plain:" in result.output
    result = runner.invoke(app, ["steer", "--recipe", str(tmp_path / "r.steer"), "-p", "Hi", "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    bad = runner.invoke(app, ["steer", "--direction", str(d), "--layers", "40", "-p", "Hi"])
    assert bad.exit_code == 2 and "out of range" in bad.output


def test_capture_command_writes_a_resumable_store(tmp_path, smollm, monkeypatch):
    import steerlab as sl
    from steerlab.cli import common

    monkeypatch.setattr(common, "load_model", lambda *a, **k: smollm)
    texts = tmp_path / "t.txt"
    texts.write_text("one\ntwo words\nthree words here\n")
    result = runner.invoke(app, ["capture", "--texts", str(texts), "--layers", "0,29", "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    acts = sl.activations.open_activations(tmp_path / "a")
    assert acts["layers.29.resid_post"].shape == (3, 576)


def test_demo_runs_small(smollm, monkeypatch):
    import steerlab as sl

    monkeypatch.setattr(sl, "load", lambda *a, **k: smollm)
    result = runner.invoke(app, ["demo", "--prompts", "2", "--strengths", "-1,0,1", "--max-new-tokens", "10"])
    assert result.exit_code == 0, result.output
    assert "mean sentiment by alpha" in result.output
    assert re.search(r"steering at layers \[\d+", result.output)
