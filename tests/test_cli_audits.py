"""The audit commands: --help with an example, one-line errors before any model loads."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from steerlab.cli import app

runner = CliRunner()


@pytest.mark.parametrize("command", ["robustness", "introspect", "truth-stability", "lofit"])
def test_help_has_an_example(command):
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
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    result = runner.invoke(app, [a if a != "x" else str(tmp_path / "new") for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_a_non_empty_out_folder_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["truth-stability", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--force" in result.output
    assert (tmp_path / "keep.txt").read_text() == "mine"
