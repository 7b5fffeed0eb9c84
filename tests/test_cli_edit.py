"""`steerlab bake` and `steerlab export`: outputs on good input, exit code 2 and one line on bad input."""

from __future__ import annotations

import torch
import typer
from typer.testing import CliRunner

import steerlab as sl
from steerlab.cli.edit import register
from steerlab.directions.direction import Direction
from tiny import tiny_model

app = typer.Typer()
register(app)
runner = CliRunner()


def tiny_folder(tmp_path):
    model = tiny_model("llama")
    folder = tmp_path / "tiny"
    model.hf_model.save_pretrained(str(folder))
    model.tokenizer.save_pretrained(str(folder))
    return folder


def test_bake_command(tmp_path):
    folder = tiny_folder(tmp_path)
    v = torch.randn(64, generator=torch.Generator().manual_seed(0))
    steer = sl.Steering([sl.Add(v, alpha=2.0, layers=[1])]) + sl.recipes.directional_ablation(v.flip(0))
    steer.save(tmp_path / "r.steer")
    result = runner.invoke(app, ["bake", "--model", str(folder), "--recipe", str(tmp_path / "r.steer"),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "mlp_bias" in result.output and "layers.1.mlp_out" in result.output
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    model = sl.load(str(folder))
    baked = sl.load(str(tmp_path / "out"))
    want = model.logits(["Hi there"], steering=steer, progress=False)
    got = baked.logits(["Hi there"], progress=False)
    assert (want - got).abs().max() <= 1e-4 * want.abs().max()
    again = runner.invoke(app, ["bake", "--model", str(folder), "--recipe", str(tmp_path / "r.steer"),
                                "--out", str(tmp_path / "out")])
    assert again.exit_code == 2 and "--force" in again.output


def test_bake_command_bad_input(tmp_path):
    folder = tiny_folder(tmp_path)
    sl.Steering([sl.Rotate(torch.ones(64), angle=10.0, layers=[1])]).save(tmp_path / "rot.steer")
    for recipe in (tmp_path / "rot.steer", tmp_path / "missing.steer"):
        result = runner.invoke(app, ["bake", "--model", str(folder), "--recipe", str(recipe), "--out",
                                     str(tmp_path / "o")])
        assert result.exit_code == 2
        assert "Traceback" not in result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:")
    assert "rotation" in runner.invoke(app, ["bake", "--model", str(folder), "--recipe", str(tmp_path / "rot.steer"),
                                             "--out", str(tmp_path / "o")]).output


def test_export_command(tmp_path):
    d = Direction({1: torch.ones(8), 2: torch.arange(8.0), 3: -torch.ones(8)})
    d.save(tmp_path / "d.direction")
    result = runner.invoke(app, ["export", "--direction", str(tmp_path / "d.direction"), "--gguf",
                                 str(tmp_path / "v.gguf"), "--layers", "2-3", "--alpha", "3"])
    assert result.exit_code == 0, result.output
    back = Direction.from_gguf(tmp_path / "v.gguf")
    assert back.layers == [2, 3] and torch.equal(back[2], 3 * torch.arange(8.0))
    bad = runner.invoke(app, ["export", "--direction", str(tmp_path / "d.direction"), "--gguf",
                              str(tmp_path / "w.gguf"), "--layers", "7"])
    assert bad.exit_code == 2 and "not in this direction" in bad.output
    bad = runner.invoke(app, ["export", "--direction", str(tmp_path / "d.direction"), "--gguf",
                              str(tmp_path / "w.gguf"), "--layers", "x"])
    assert bad.exit_code == 2 and "layer list" in bad.output


def test_export_layers_all_and_from_the_end(tmp_path):
    d = Direction({0: torch.ones(8), 1: torch.ones(8), 2: torch.arange(8.0), 3: -torch.ones(8)})
    d.save(tmp_path / "d.direction")
    args = ["export", "--direction", str(tmp_path / "d.direction"), "--gguf"]
    result = runner.invoke(app, [*args, str(tmp_path / "all.gguf"), "--layers", "all"])
    assert result.exit_code == 0, result.output
    assert Direction.from_gguf(tmp_path / "all.gguf").layers == [1, 2, 3]   # llama.cpp never steers block 0
    assert "note: layer 0 left out" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, [*args, str(tmp_path / "end.gguf"), "--layers", "-2--1"])
    assert result.exit_code == 0, result.output
    assert Direction.from_gguf(tmp_path / "end.gguf").layers == [2, 3]
    bad = runner.invoke(app, [*args, str(tmp_path / "x.gguf"), "--layers", "-9"])
    assert bad.exit_code == 2 and "out of range: the direction holds layers 0-3" in bad.output
