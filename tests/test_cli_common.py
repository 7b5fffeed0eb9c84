"""What every command shares: the layer parser, the one-line error wrapper, the pairs loader, the one model loader."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from steerlab.cli import app, common
from steerlab.cli.common import layer_spec, one_layer, parse_layers
from steerlab.errors import DataError, SiteError, SteerlabError

runner = CliRunner()


@pytest.mark.parametrize("text, want", [
    ("all", list(range(30))),
    ("10", [10]),
    ("8-12", [8, 9, 10, 11, 12]),
    ("8,10,12", [8, 10, 12]),
    ("12,8,10", [8, 10, 12]),
    ("8-10,9,10-11", [8, 9, 10, 11]),
    ("-1", [29]),
    ("-30", [0]),
    ("-3--1", [27, 28, 29]),
    ("0,4-6,-1", [0, 4, 5, 6, 29]),
    ("25--3", [25, 26, 27]),
    ("-5-27", [25, 26, 27]),
    (" 1 , 2-3 ", [1, 2, 3]),
    ("0-29", list(range(30))),
])
def test_parse_layers_against_a_model(text, want):
    assert parse_layers(text, 30) == want


@pytest.mark.parametrize("text", [None, "", "  "])
def test_nothing_given_is_none(text):
    assert parse_layers(text, 30) is None
    assert layer_spec(text) is None


@pytest.mark.parametrize("text", ["x", "1-z", "8-", "-", "1,,2", "8..12", "all,3", "1.5", "8-10-12", "--1"])
def test_bad_syntax_is_one_line_naming_the_option(text):
    with pytest.raises(SiteError) as info:
        parse_layers(text, 30)
    message = str(info.value)
    assert message.startswith(f"--layers {text!r} is not a layer list") and "\n" not in message
    assert "-3--1" in message   # says what is allowed
    with pytest.raises(SiteError):
        layer_spec(text)        # the same check runs before any model loads


@pytest.mark.parametrize("text", ["30", "40", "-31", "0,30", "28-30", "-40--1"])
def test_out_of_range_against_the_model(text):
    with pytest.raises(SiteError) as info:
        parse_layers(text, 30)
    assert str(info.value) == f"--layers {text!r} is out of range: the model has 30 layers (0-29)"


def test_backwards_range_is_refused():
    with pytest.raises(SiteError, match="runs backwards"):
        parse_layers("12-8", 30)
    with pytest.raises(SiteError, match="runs backwards"):
        parse_layers("-1--3", 30)


def test_option_name_appears_in_the_message():
    with pytest.raises(SiteError, match=r"^--layer '9' is out of range: the model has 3 layers \(0-2\)$"):
        one_layer(9, 3)
    assert one_layer(-1, 3) == 2


def test_against_a_directions_layers():
    held = [8, 9, 10]
    assert parse_layers("all", held=held) == [8, 9, 10]
    assert parse_layers("-1", held=held) == [10]
    assert parse_layers("-3--1", held=held) == [8, 9, 10]
    assert parse_layers("9", held=held) == [9]
    with pytest.raises(SiteError, match=r"layers 0-3 are not in this direction; it holds layers 8-10"):
        parse_layers("0-3", held=held)
    with pytest.raises(SiteError, match=r"layers \[7\] are not in this direction"):
        parse_layers("7", held=held)
    with pytest.raises(SiteError, match=r"^--layers '9-99999999': layer 99999999 is not in this direction; "
                                        r"it holds layers 8-10$"):
        parse_layers("9-99999999", held=held)
    with pytest.raises(SiteError, match="out of range: the direction holds layers 8-10"):
        parse_layers("-12", held=held)
    # with the model's layer count known, negatives count from the model's end
    assert parse_layers("-1", 11, held=held) == [10]
    with pytest.raises(SiteError, match=r"layer 29 is not in this direction"):
        parse_layers("-1", 30, held=held)


def test_needs_a_model_or_a_direction():
    with pytest.raises(TypeError):
        parse_layers("3")


def test_load_pairs_by_name_file_and_bad_name(tmp_path):
    assert len(common.load_pairs("sentiment")) > 10
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps({"positive": f"good {c}", "negative": f"bad {c}"}) for c in "abc"))
    pairs = common.load_pairs(str(path))
    assert pairs.positive == ["good a", "good b", "good c"]
    with pytest.raises(DataError, match=r"^--data 'sentimnt' is not a bundled set \(did you mean 'sentiment'\?\)"):
        common.load_pairs("sentimnt")
    with pytest.raises(DataError, match=r"^--dataset 'gone.csv': no such file$"):
        common.load_pairs("gone.csv", "--dataset")


def _app_raising(error: BaseException) -> typer.Typer:
    def boom() -> None:
        """A command that fails.

        Example:  steerlab boom
        """
        raise error

    def other() -> None:
        """Another command, so typer keeps subcommands."""

    app = typer.Typer()
    common.add_commands(app, {"boom": boom, "other": other})
    return app


@pytest.mark.parametrize("error, code, line", [
    (SteerlabError("--x 3 is not allowed; use 1 or 2"), 2, "error: --x 3 is not allowed; use 1 or 2"),
    (FileNotFoundError(2, "No such file", "/no/file"), 2, "error: file not found: /no/file"),
    (KeyboardInterrupt(), 130, "error: interrupted"),
    (SteerlabError("a [bold]markup-like[/] message"), 2, "error: a [bold]markup-like[/] message"),
])
def test_one_line_errors(error, code, line):
    result = runner.invoke(_app_raising(error), ["boom"])
    assert result.exit_code == code
    assert result.output.strip() == line


def test_a_bug_keeps_its_traceback():
    result = runner.invoke(_app_raising(RuntimeError("a bug")), ["boom"])
    assert isinstance(result.exception, RuntimeError)


def test_every_layer_option_says_what_it_accepts():
    import typer.main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        for param in command.params:
            if param.name == "layers" and name != "demo":
                assert "-3--1" in (param.help or ""), name


def test_bad_layers_fail_before_the_model_loads(monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("the model must not load for a bad --layers")

    monkeypatch.setattr(common, "load_model", no_load)
    for args in (["capture", "--data", "sentiment", "--layers", "1-z", "--out", "x"],
                 ["extract", "--layers", "8..12", "--out", "x"],
                 ["lens", "hi", "--target", "x", "--layers", "x"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert result.output.strip().startswith("error: --layers") and len(result.output.strip().splitlines()) == 1


def test_steer_reads_its_files_before_the_model_loads(monkeypatch, tmp_path):
    """A wrong path fails in one line without loading (or converting) a model: nothing else gets printed."""
    def no_load(*args, **kwargs):
        raise AssertionError("the model must not load for a missing file")

    monkeypatch.setattr(common, "load_model", no_load)
    for args, message in ((["--direction", str(tmp_path / "no.direction")], "no direction at"),
                          (["--recipe", str(tmp_path / "no.steer")], "no steering recipe at")):
        result = runner.invoke(app, ["steer", "-p", "hi", *args])
        assert result.exit_code == 2 and result.output.startswith(f"error: {message}"), result.output


@pytest.mark.slow
def test_steer_layers_from_the_end(tmp_path, smollm, monkeypatch):
    import steerlab as sl

    monkeypatch.setattr(common, "load_model", lambda *a, **k: smollm)
    d = sl.directions.mean_diff(smollm, sl.data.load("sentiment"), layers=[27, 28, 29])
    d.save(tmp_path / "d.direction")
    result = runner.invoke(app, ["steer", "--direction", str(tmp_path / "d.direction"), "--layers", "-3--1",
                                 "--max-new-tokens", "2", "-p", "Hi", "--save-recipe", str(tmp_path / "r.steer")])
    assert result.exit_code == 0, result.output
    recipe = json.loads((tmp_path / "r.steer" / "recipe.json").read_text())
    assert recipe["interventions"][0]["config"]["layers"] == [27, 28, 29]
