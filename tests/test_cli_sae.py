"""`steerlab sae train|features|steer` on a tiny model: outputs on good input, exit 2 and one line on bad input."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

import steerlab as sl
from steerlab.cli import common
from steerlab.cli.sae import register
from tiny import tiny_model

app = typer.Typer()
register(app)
runner = CliRunner()
TEXTS = [f"sample {i} " + "xyz"[i % 3] * (2 + i % 5) + " words follow here" for i in range(24)]


@pytest.fixture
def setup(tmp_path, monkeypatch):
    model = tiny_model("llama")
    monkeypatch.setattr(common, "load_model", lambda *a, **k: model)
    model.capture(TEXTS, sites="layers.1.resid_post", positions="all", out=tmp_path / "acts", progress=False)
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS))
    return model, tmp_path


def test_train_features_steer(setup):
    _, tmp = setup
    r = runner.invoke(app, ["sae", "train", "--store", str(tmp / "acts"), "--out", str(tmp / "s.sae"), "--d-sae", "32",
                            "--k", "4", "--epochs", "2", "--batch-size", "64"])
    assert r.exit_code == 0, r.output
    assert "explained variance" in r.output and (tmp / "s.sae" / "cfg.json").is_file()
    r = runner.invoke(app, ["sae", "train", "--store", str(tmp / "acts"), "--out", str(tmp / "s.sae")])
    assert r.exit_code == 2 and "--force" in r.output
    r = runner.invoke(app, ["sae", "features", "--sae", str(tmp / "s.sae"), "--texts", str(tmp / "texts.txt"),
                            "-f", "0", "-f", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert '"0"' in r.output and '"top"' in r.output
    r = runner.invoke(app, ["sae", "steer", "--sae", str(tmp / "s.sae"), "-p", "hello", "--clamp", "3=5",
                            "--max-new-tokens", "4", "--save-recipe", str(tmp / "r.steer")])
    assert r.exit_code == 0, r.output
    recipe = sl.Steering.load(tmp / "r.steer")
    assert recipe.interventions[0].kind == "sae_edit"
    r = runner.invoke(app, ["sae", "steer", "--sae", str(tmp / "s.sae"), "-p", "hello", "--feature", "2",
                            "--alpha", "3", "--max-new-tokens", "4", "--compare"])
    assert r.exit_code == 0 and "unsteered:" in r.output


@pytest.mark.parametrize("args, message", [
    (["sae", "steer", "--sae", "{tmp}/nope", "-p", "x", "--feature", "1"], "no SAE"),
    (["sae", "steer", "--sae", "{tmp}/s.sae", "-p", "x"], "give either"),
    (["sae", "steer", "--sae", "{tmp}/s.sae", "-p", "x", "--clamp", "3:5"], "FEATURE=NUMBER"),
    (["sae", "steer", "--sae", "{tmp}/s.sae", "-p", "x", "--clamp", "999=5"], "out of range"),
    (["sae", "features", "--sae", "{tmp}/s.sae"], "--feature"),
    (["sae", "train", "--store", "{tmp}/missing", "--out", "{tmp}/o"], "no activations"),
])
def test_bad_input_is_one_line(setup, args, message):
    _, tmp = setup
    sl.sae.SAE(*(__import__("torch").zeros(s) for s in ((64, 8), (8,), (8, 64), (64,))),
               site="layers.1.resid_post").save(tmp / "s.sae")
    r = runner.invoke(app, [a.format(tmp=tmp) for a in args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_registered_on_the_main_app():
    from steerlab.cli import app as main_app

    r = runner.invoke(main_app, ["sae", "--help"])
    assert r.exit_code == 0 and "train" in r.output and "features" in r.output and "steer" in r.output
    for command in ("train", "features", "steer"):
        r = runner.invoke(main_app, ["sae", command, "--help"])
        assert r.exit_code == 0 and "Example" in r.output
