"""One clear line for every bad input, saves that never delete, and the small gaps users hit
(the rows of docs/reliability.md)."""

from __future__ import annotations

import json
import time

import pytest
import torch
from typer.testing import CliRunner

import steerlab as sl
from steerlab.cli import app, common
from steerlab.errors import DataError, ShapeError, SteerlabError

runner = CliRunner()


def _one_line(result, message):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a command gets as far as loading a model (the check must come first)."""
    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(common, "load_model", refuse)


@pytest.fixture
def tiny_cli(monkeypatch, tiny_llama):
    monkeypatch.setattr(common, "load_model", lambda *a, **k: tiny_llama)
    return tiny_llama


def _direction(tmp_path, name="d.direction"):
    d = sl.Direction({i: torch.randn(64) for i in range(4)}, meta={"method": "test"})
    return d.save(tmp_path / name)


# --- 1. never delete user data ------------------------------------------------------------------
def test_extract_twice_refuses_then_force_replaces_only_its_own(tmp_path, tiny_cli):
    out = tmp_path / "happy.direction"
    args = ["extract", "--data", "sentiment", "--layers", "1-2", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    first = (out / "vectors.safetensors").read_bytes()
    _one_line(runner.invoke(app, args), "--force")
    assert (out / "vectors.safetensors").read_bytes() == first
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("years of work")
    _one_line(runner.invoke(app, [*args[:-1], str(mine), "--force"]), "not a saved direction")
    assert (mine / "chapter1.tex").read_text() == "years of work"


@pytest.mark.parametrize("argv", [
    ["extract", "--data", "sentiment", "--out", "{target}"],
    ["extract", "--data", "sentiment", "--out", "{target}", "--force"],
    ["steer", "--direction", "{direction}", "-p", "hi", "--save-recipe", "{target}", "--force"],
    ["capture", "--data", "sentiment", "--out", "{target}", "--force"],
    ["bake", "--recipe", "{recipe}", "--out", "{target}", "--force"],
    ["export", "--direction", "{direction}", "--gguf", "{file}", "--force"],
    ["sweep", "--csv", "{file}", "--force"],
    ["compare", "--out", "{target}", "--force"],
    ["lens", "hi", "--target", " x", "--out", "{lensdir}"],
])
def test_no_command_writes_over_user_files_even_with_force(tmp_path, no_model, argv):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("precious")
    file = tmp_path / "mine.txt"
    file.write_text("precious file")
    lensdir = tmp_path / "runs"
    lensdir.mkdir()
    (lensdir / "lens.csv").write_text("an earlier table")
    direction = _direction(tmp_path)
    recipe = sl.Steering([sl.Add(torch.ones(64), alpha=1.0, layers=[1])]).save(tmp_path / "r.steer")
    args = [a.format(target=target, direction=direction, recipe=recipe, file=file, lensdir=lensdir) for a in argv]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert (target / "notes.txt").read_text() == "precious"
    assert file.read_text() == "precious file"
    assert (lensdir / "lens.csv").read_text() == "an earlier table"


def test_a_forced_bake_replaces_only_a_baked_checkpoint(tmp_path, tiny_cli):
    recipe = sl.Steering([sl.Add(torch.ones(64), alpha=0.5, layers=[1])]).save(tmp_path / "r.steer")
    out = tmp_path / "baked"
    args = ["bake", "--recipe", str(recipe), "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0, "first bake"
    _one_line(runner.invoke(app, args), "--force")
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing left beside it


# --- 3. one clear line before any slow work ----------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["steer", "--direction", "{direction}", "-p", "hi", "--alpha", "nan"], "--alpha"),
    (["steer", "--direction", "{direction}", "-p", "hi", "--alpha", "inf"], "--alpha"),
    (["steer", "--direction", "{direction}", "-p", "hi", "--alpha", "1e9"], "--alpha"),
    (["steer", "--direction", "{direction}", "-p", "hi", "--max-new-tokens", "-3"], "--max-new-tokens"),
    (["steer", "--direction", "{direction}", "-p", "hi", "--positions", "middle"], "positions"),
    (["steer", "--direction", "{direction}", "-p", "hi", "--site", "resid_middle"], "site"),
    (["steer", "--direction", "{direction}", "-p", "hi", "--layers", "3-x"], "--layers"),
    (["capture", "--texts", "{latin1}", "--out", "{new}"], "UTF-8"),
    (["capture", "--texts", "{badjson}", "--out", "{new}"], "not valid JSON"),
    (["capture", "--texts", "{texts}", "--out", "{file}"], "is a file"),
    (["capture", "--texts", "{texts}", "--out", "{new}", "--batch-size", "0"], "--batch-size"),
    (["capture", "--texts", "{texts}", "--out", "{new}", "--positions", "first"], "--positions"),
    (["extract", "--data", "{latin1csv}", "--out", "{new}"], "UTF-8"),
    (["extract", "--data", "{brokencsv}", "--out", "{new}"], "positive"),
    (["export", "--direction", "{direction}", "--gguf", "{newfile}", "--alpha", "nan"], "--alpha"),
    (["sweep", "--k", "0"], "--k"),
    (["serve", "--recipe", "happy={new}"], "no steering recipe"),
    (["serve", "--direction", "refusal={new}"], "no direction"),
    (["demo", "--strengths", "0,nan"], "--strengths"),
    (["demo", "--prompts", "0"], "--prompts"),
    (["compare", "--out", "{new}", "--strengths", "add=0,inf"], "--strengths"),
])
def test_bad_input_fails_in_one_line_before_the_model_loads(tmp_path, no_model, argv, message):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (tmp_path / "latin1.csv").write_bytes("positive,negative\ncaf\xe9,th\xe9\n".encode("latin-1"))
    (tmp_path / "broken.csv").write_text('positive;negative\n"a;b\n')
    (tmp_path / "bad.json").write_text('["a", "b"')
    (tmp_path / "texts.txt").write_text("one\ntwo\n")
    (tmp_path / "afile").write_text("x")
    paths = {"direction": _direction(tmp_path), "latin1": tmp_path / "latin1.txt", "badjson": tmp_path / "bad.json",
             "latin1csv": tmp_path / "latin1.csv", "brokencsv": tmp_path / "broken.csv", "new": tmp_path / "new",
             "texts": tmp_path / "texts.txt", "file": tmp_path / "afile", "newfile": tmp_path / "v.gguf"}
    _one_line(runner.invoke(app, [a.format(**paths) for a in argv]), message)


def test_cuda_without_a_gpu_and_unknown_hub_ids_fail_fast(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SteerlabError, match="device='cuda'.*no CUDA GPU"):
        sl.load("smollm2", device="cuda")
    _one_line(runner.invoke(app, ["sites", "--device", "cuda"]), "no CUDA GPU")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://unreachable.invalid")
    started = time.perf_counter()
    with pytest.raises(SteerlabError, match="cannot be reached"):
        sl.load("nobody/surely-not-a-model-xyz")
    assert time.perf_counter() - started < 10  # no minute of retries
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _one_line(runner.invoke(app, ["sites", "--model", "nobody/surely-not-a-model-xyz"]), "cannot be reached")
    _one_line(runner.invoke(app, ["sites", "--model", "./no/such/folder"]), "no such file or folder")


def _edit(folder, name, change):
    doc = json.loads((folder / name).read_text())
    change(doc)
    (folder / name).write_text(json.dumps(doc))


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("layers"), "'layers'"),
    (lambda d: d.update(layers=[0, 1, 2, "3"]), "'layers'"),
    (lambda d: d.update(d_model="64"), "'d_model'"),
    (lambda d: d.update(d_model=65), "shape"),
    (lambda d: d.update(colour="red"), "unknown keys"),
    (lambda d: d.update(meta=[1]), "'meta'"),
    (lambda d: d.update(layers=[0, 1, 2, 5]), "lists layers"),
])
def test_a_hand_edited_direction_gives_one_clear_error(tmp_path, change, message):
    folder = _direction(tmp_path)
    _edit(folder, "direction.json", change)
    with pytest.raises(DataError, match=message):
        sl.Direction.load(folder)


@pytest.mark.parametrize("value, message", [(float("nan"), "NaN"), (float("inf"), "NaN or infinite"),
                                            (3e7, "above")])
def test_nan_inf_and_absurd_vectors_are_refused_on_load(tmp_path, value, message):
    from safetensors.torch import save_file

    folder = _direction(tmp_path)
    v = torch.randn(64)
    v[3] = value
    tensors = {f"layer.{i}": torch.randn(64) for i in range(4)}
    tensors["layer.2"] = v
    save_file(tensors, str(folder / "vectors.safetensors"))
    with pytest.raises(DataError, match=message):
        sl.Direction.load(folder)


@pytest.mark.parametrize("cut", [0, 7, 40, -3])
def test_a_truncated_safetensors_file_is_one_clear_error(tmp_path, cut):
    folder = _direction(tmp_path)
    data = (folder / "vectors.safetensors").read_bytes()
    (folder / "vectors.safetensors").write_bytes(data[:cut])
    with pytest.raises(DataError, match="vectors.safetensors"):
        sl.Direction.load(folder)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("interventions"), "'interventions'"),
    (lambda d: d.update(extra=1), "unknown keys"),
    (lambda d: d["interventions"][0].update(kind=["add"]), "'kind'"),
    (lambda d: d["interventions"][0].update(kind="teleport"), "unknown intervention kind"),
    (lambda d: d["interventions"][0]["config"].update(alpha=float("nan")), "finite"),
    (lambda d: d["interventions"][0]["config"].update(alpha=1e300), "finite"),
    (lambda d: d["interventions"][0]["config"].update(alpha="strong"), "intervention 0"),
    (lambda d: d["interventions"][0]["config"].update(bogus=3), "intervention 0"),
    (lambda d: d["interventions"][0]["config"].pop("layers"), None),   # a missing optional setting: its default
    (lambda d: d["interventions"][0].pop("config"), "exactly 'kind' and 'config'"),
    (lambda d: d.update(interventions=[]), "stray|belong to no intervention"),
])
def test_a_hand_edited_recipe_gives_one_clear_error(tmp_path, change, message):
    folder = sl.Steering([sl.Add(torch.ones(64), alpha=1.0, layers=[1])]).save(tmp_path / "r.steer")
    _edit(folder, "recipe.json", change)
    if message is None:
        assert len(sl.Steering.load(folder)) == 1
        return
    with pytest.raises(DataError, match=message):
        sl.Steering.load(folder)


def test_the_loaders_read_their_own_saves_back(tmp_path):
    d = sl.Direction({2: torch.randn(8), 5: torch.randn(8)}, meta={"scores": {2: 0.5, 5: 0.9}})
    back = sl.Direction.load(d.save(tmp_path / "d"))
    assert back.layers == [2, 5] and torch.equal(back[5], d[5]) and back.meta["scores"] == {2: 0.5, 5: 0.9}
    r = sl.Steering([sl.Add(d, alpha=0.5, layers=[2, 5]), sl.Add(torch.ones(8), alpha=-1.0, layers=[2])])
    again = sl.Steering.load(r.save(tmp_path / "r"))
    assert again.digest() == r.digest()


def test_non_utf8_and_malformed_data_files_are_data_errors(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b'{"positive": "caf\xe9", "negative": "x"}\n')
    (tmp_path / "b.csv").write_bytes(b"positive,negative\n\xff\xfe,x\n")
    (tmp_path / "c.jsonl").write_text("[" * 100_000 + "\n")
    (tmp_path / "d.csv").write_text('positive,negative\n"unclosed,x\n', encoding="utf-8")
    for name, message in [("a.jsonl", "UTF-8"), ("b.csv", "UTF-8"), ("c.jsonl", "nested too deeply"),
                          ("d.csv", "positive|negative|CSV")]:
        with pytest.raises(DataError, match=message):
            sl.data.load(str(tmp_path / name))


# --- 5. defaults, and recipes on baked checkpoints ---------------------------------------------
def test_steer_defaults_to_a_modest_strength_at_middle_layers():
    from steerlab.cli.core import DEFAULT_ALPHA, default_layers

    assert DEFAULT_ALPHA == 0.75
    assert default_layers(list(range(30)), 30) == [15, 16, 17]  # the README's SmolLM2 choice
    assert default_layers([2, 3, 20], 30) == [2, 3, 20]
    assert default_layers(list(range(4)), 4) == [1, 2, 3]
    assert default_layers(list(range(40)), 3) == [0, 1, 2]


def test_steer_cli_uses_the_defaults(tmp_path, tiny_cli):
    d = _direction(tmp_path)
    out = tmp_path / "used.steer"
    result = runner.invoke(app, ["steer", "--direction", str(d), "-p", "hi", "--max-new-tokens", "2",
                                 "--save-recipe", str(out)])
    assert result.exit_code == 0, result.output
    add = next(iter(sl.Steering.load(out)))
    assert add.config()["alpha"] == 0.75 and add.config()["layers"] == [0, 1, 2]  # all 3 of the tiny model


def test_a_recipe_loads_on_its_models_baked_checkpoint_and_same_shape_needs_the_override(tmp_path, tiny_llama):
    from tiny import tiny_model

    add = sl.Add(torch.randn(64), alpha=0.5, layers=[1], site="attn_out")
    recipe = sl.Steering([add], meta={"model": dict(tiny_llama.fingerprint)})
    hf = sl.edit.bake(tiny_llama, recipe)
    baked = sl.Model(hf, tiny_llama.tokenizer, name="baked")
    assert baked.fingerprint["shape_hash"] != tiny_llama.fingerprint["shape_hash"]  # bake adds a bias
    recipe.check_model(baked.fingerprint)  # made for its source: accepted
    other = tiny_model("qwen2")  # same depth and width, another architecture
    assert (other.n_layers, other.d_model) == (tiny_llama.n_layers, tiny_llama.d_model)
    with pytest.raises(ShapeError, match="--any-model"):
        recipe.check_model(other.fingerprint)
    recipe.check_model(other.fingerprint, same_shape=True)
    with pytest.raises(ShapeError):
        sl.Steering.load(recipe.save(tmp_path / "r.steer"), other)
    adopted = sl.Steering.load(tmp_path / "r.steer", other, same_shape=True)
    assert len(other.generate(["hi"], steering=adopted, max_new_tokens=2).texts) == 1  # generate accepts it too
    wide = tiny_model("gpt2")
    wide_fp = {**wide.fingerprint, "d_model": 999}
    with pytest.raises(ShapeError):
        recipe.check_model(wide_fp, same_shape=True)


# --- 6. small gaps --------------------------------------------------------------------------------
def test_version_and_sites(tiny_cli):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"steerlab {sl.__version__}"
    result = runner.invoke(app, ["sites", "--layers", "1"])
    assert result.exit_code == 0, result.output
    assert "layers.1.resid_post" in result.output and "layers.0.resid_post" not in result.output
    assert f"[{tiny_cli.d_model}]" in result.output
    assert "mlp_hidden" not in result.output or str(tiny_cli.d_mlp) in result.output

