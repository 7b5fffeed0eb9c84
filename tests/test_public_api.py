"""The package surface: star import, lazily imported subpackages, py.typed, no import cycle."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import steerlab as sl

SRC = Path(sl.__file__).parent


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(SRC.parent)})


def test_star_import_works_and_names_only_what_exists():
    done = _python("from steerlab import *; import steerlab; print(sorted(steerlab.__all__))")
    assert done.returncode == 0, done.stderr
    for name in sl.__all__:
        assert getattr(sl, name) is not None, name
    for name in sl.SUBPACKAGES:
        assert name in sl.__all__ and (SRC / name / "__init__.py").is_file(), name


def test_directions_do_not_import_edit():
    done = _python("import sys, steerlab.directions; print('steerlab.edit' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_the_package_ships_py_typed():
    assert (SRC / "py.typed").is_file()
    pyproject = (SRC.parents[1] / "pyproject.toml").read_text()
    package_data = pyproject.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    assert '"py.typed"' in package_data
