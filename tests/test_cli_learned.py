"""`steerlab controller`, `steerlab grains`, `steerlab amortize`: real runs on a tiny model, one-line errors."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import steerlab as sl
from steerlab.cli import app

runner = CliRunner()


@pytest.fixture()
def tiny(monkeypatch, tiny_llama):
    from steerlab.cli import common

    monkeypatch.setattr(common, "load_model", lambda *a, **k: tiny_llama)
    return tiny_llama


@pytest.mark.parametrize("args, message", [
    (["controller", "--out", "x", "--epochs", "0"], "--epochs"),
    (["controller", "--out", "x", "--input-layers", "9-7"], "backwards"),
    (["grains", "--out", "x", "--data", "no-such-set"], "no-such-set"),
    (["grains", "--out", "x", "--k", "0"], "--k"),
    (["amortize", "--recipe", "/no/such.steer", "--out", "x"], "no steering recipe"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output


def test_controller_grains_and_amortize_run_end_to_end(tmp_path, tiny):
    guard = tmp_path / "guard.steer"
    result = runner.invoke(app, ["controller", "--out", str(guard), "--input-layers", "0", "--n-train", "6",
                                 "--epochs", "1"])
    assert result.exit_code == 0, result.output
    recipe = sl.Steering.load(guard)
    assert [item.kind for item in recipe] == ["weighted"]
    assert not torch.allclose(tiny.logits(["hi"], steering=recipe), tiny.logits(["hi"]))
    again = runner.invoke(app, ["controller", "--out", str(guard), "--input-layers", "0"])
    assert again.exit_code == 2 and "exists" in again.output

    d, r = tmp_path / "g.direction", tmp_path / "g.steer"
    result = runner.invoke(app, ["grains", "--out", str(d), "--recipe", str(r), "--layer", "1", "--pairs", "2",
                                 "--k", "2", "--steps", "2", "--alpha", "0.1"])
    assert result.exit_code == 0, result.output
    assert sl.Direction.load(d).layers == [1] and sl.Steering.load(r).meta["recipe"] == "grains"

    ckpt = tmp_path / "ckpt"
    result = runner.invoke(app, ["amortize", "--recipe", str(r), "--out", str(ckpt), "--n-prompts", "3",
                                 "--reply-tokens", "2", "--rank", "4"])
    assert result.exit_code == 0, result.output
    assert (ckpt / "config.json").is_file() and "relative error" in result.output
    again = runner.invoke(app, ["amortize", "--recipe", str(r), "--out", str(ckpt)])
    assert again.exit_code == 2 and "--force" in again.output
