"""Property-based tests: whatever bytes or arguments come in, steerlab's readers and parsers either
load them or raise SteerlabError: never another exception, never a hang."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import steerlab as sl
from steerlab.activations import DiskActivations
from steerlab.cli.common import layer_spec, parse_layers
from steerlab.errors import SteerlabError

SETTINGS = settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


def _tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="steerlab-prop-"))


def _loads_or_steerlab_error(load, *args):
    try:
        return load(*args)
    except SteerlabError:
        return None


@pytest.fixture(scope="module")
def saved():
    root = _tmp()
    d = sl.Direction({0: torch.randn(4), 1: torch.randn(4)}, meta={"method": "t"}).save(root / "d")
    r = sl.Steering([sl.Add(torch.ones(4), alpha=1.0, layers=[1]),
                     sl.Ablate(torch.ones(4), layers=[0])]).save(root / "r")
    return {"direction": (d, "direction.json"), "recipe": (r, "recipe.json")}


def _paths(node, prefix=()):
    """Every key path into a JSON document (the root included)."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _mutate(doc, path, action, value):
    """``doc`` with the node at ``path`` deleted, replaced by ``value``, or given an extra key ``"x"``."""
    if not path:
        return value if action == "replace" else doc
    node = doc
    for key in path[:-1]:
        node = node[key]
    last = path[-1]
    if action == "delete":
        del node[last]
    elif action == "replace":
        node[last] = value
    elif isinstance(node[last], dict):
        node[last]["x"] = value
    return doc


def _tampered(doc, data):
    """Draw one tampering (delete, replace or add a key anywhere) of ``doc`` with hypothesis' ``data``."""
    path = data.draw(st.sampled_from(list(_paths(doc))))
    action = data.draw(st.sampled_from(["delete", "replace", "add"]))
    return _mutate(doc, path, action, data.draw(json_values))


@pytest.mark.parametrize("kind", ["direction", "recipe"])
@SETTINGS
@given(data=st.data())
def test_hand_edited_artifacts_load_or_raise_steerlab_error(saved, kind, data):
    folder, marker = saved[kind]
    work = _tmp() / "copy"
    work.mkdir()
    for f in folder.iterdir():
        (work / f.name).write_bytes(f.read_bytes())
    doc = json.loads((folder / marker).read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        doc = _tampered(doc, data)
    (work / marker).write_text(json.dumps(doc))
    load = sl.Direction.load if kind == "direction" else sl.Steering.load
    _loads_or_steerlab_error(load, work)


@pytest.mark.parametrize("kind", ["direction", "recipe"])
@SETTINGS
@given(data=st.binary(max_size=300), keep=st.integers(0, 400))
def test_arbitrary_bytes_in_artifact_files_load_or_raise_steerlab_error(saved, kind, data, keep):
    folder, marker = saved[kind]
    work = _tmp() / "copy"
    work.mkdir()
    for f in folder.iterdir():
        raw = f.read_bytes()
        (work / f.name).write_bytes(raw[:keep] + data if f.suffix == ".safetensors" else raw)
    _loads_or_steerlab_error(sl.Direction.load if kind == "direction" else sl.Steering.load, work)
    (work / marker).write_bytes(data)
    _loads_or_steerlab_error(sl.Direction.load if kind == "direction" else sl.Steering.load, work)


@pytest.fixture(scope="module")
def capture_folder(tiny_llama):
    out = _tmp() / "acts"
    tiny_llama.capture(["a b", "c", "d e f", "g"], sites="layers.0.resid_post", batch_size=2, out=out)
    return out


@SETTINGS
@given(data=st.data(),
       file=st.sampled_from(["../x.safetensors", "/etc/passwd", "shard-000000.safetensors", "shard-000001.safetensors",
                             "", ".", "shard-1.safetensors"]))
def test_a_tampered_manifest_loads_or_raises_steerlab_error(capture_folder, data, file):
    work = _tmp() / "acts"
    work.mkdir()
    for f in capture_folder.iterdir():
        (work / f.name).write_bytes(f.read_bytes())
    doc = json.loads((capture_folder / "manifest.json").read_text())
    if data.draw(st.booleans()):
        doc["shards"][0]["file"] = file
    for _ in range(data.draw(st.integers(1, 3))):
        doc = _tampered(doc, data)
    (work / "manifest.json").write_text(json.dumps(doc))

    def read(folder):
        acts = DiskActivations(folder)
        for name in acts.sites:
            acts[name]
        acts.verify()

    _loads_or_steerlab_error(read, work)


@SETTINGS
@given(data=st.binary(max_size=200), keep=st.integers(0, 2000))
def test_corrupt_shard_bytes_read_or_raise_steerlab_error(capture_folder, data, keep):
    work = _tmp() / "acts"
    work.mkdir()
    for f in capture_folder.iterdir():
        raw = f.read_bytes()
        (work / f.name).write_bytes(raw[:keep] + data if f.name == "shard-000001.safetensors" else raw)

    def read(folder):
        acts = DiskActivations(folder)
        acts["layers.0.resid_post"]

    _loads_or_steerlab_error(read, work)


@SETTINGS
@given(text=st.text(max_size=200), raw=st.binary(max_size=200), suffix=st.sampled_from([".jsonl", ".csv"]))
def test_data_files_load_or_raise_steerlab_error(text, raw, suffix):
    folder = _tmp()
    for i, content in enumerate([text.encode("utf-8", "surrogatepass"), raw,
                                 ("positive,negative\n" + text).encode("utf-8", "surrogatepass")]):
        path = folder / f"f{i}{suffix}"
        path.write_bytes(content)
        result = _loads_or_steerlab_error(sl.data.from_file, path)
        assert result is None or len(result) >= 1


@SETTINGS
@given(spec=st.text(alphabet="0123456789-, alx", max_size=16), n=st.integers(1, 64),
       held=st.none() | st.lists(st.integers(0, 63), min_size=1, max_size=8))
def test_the_layer_parser_parses_or_raises_steerlab_error(spec, n, held):
    try:
        layer_spec(spec)
        layers = parse_layers(spec, None if held else n, held=held)
    except SteerlabError:
        return
    if layers is not None:
        assert layers == sorted(set(layers))
        assert all(0 <= x < n for x in layers) if not held else set(layers) <= set(held)


@SETTINGS
@given(texts=st.lists(st.text(max_size=30), max_size=4), suffix=st.sampled_from([".txt", ".json", ".jsonl"]),
       raw=st.binary(max_size=100))
def test_the_texts_reader_reads_or_raises_steerlab_error(texts, suffix, raw):
    from steerlab.cli.core import read_texts

    folder = _tmp()
    for i, content in enumerate([json.dumps(texts).encode(), "\n".join(texts).encode("utf-8", "surrogatepass"), raw]):
        path = folder / f"t{i}{suffix}"
        path.write_bytes(content)
        got = _loads_or_steerlab_error(read_texts, path)
        assert got is None or (got and all(isinstance(t, str) and t.strip() for t in got))


@SETTINGS
@given(text=st.text(alphabet="addpcaselctiv=,;.0123456789-+eE naif", max_size=24))
def test_the_strengths_parser_parses_or_raises_steerlab_error(text):
    from steerlab.cli.compare import parse_strengths

    got = _loads_or_steerlab_error(parse_strengths, text, ["add", "pca", "selective"])
    if got is not None:
        assert set(got) <= {"add", "pca", "selective"}
        assert all(v and all(math.isfinite(x) and abs(x) <= 1e4 for x in v) for v in got.values())


@SETTINGS
@given(text=st.text(alphabet="alst0123456789-, ", max_size=12))
def test_the_analysis_positions_parser_parses_or_raises_steerlab_error(text):
    from steerlab.cli.analysis import _positions

    got = _loads_or_steerlab_error(_positions, text)
    assert got is None or got in ("all", "last") or all(isinstance(p, int) for p in got)


@SETTINGS
@given(values=st.lists(st.text(alphabet="ab=./ ", max_size=8), max_size=4))
def test_the_name_path_parser_parses_or_raises_steerlab_error(values):
    from steerlab.cli.serve import named_paths

    got = _loads_or_steerlab_error(named_paths, values, "--recipe")
    assert got is None or all(k and v and k == k.strip() for k, v in got.items())


@SETTINGS
@given(value=json_values | st.floats() | st.lists(st.integers(-10**6, 10**6), max_size=3))
def test_positions_and_strengths_in_python_build_or_raise_steerlab_error(value):
    """Anything given as positions, alpha, angle, factor or clamp value: built and finite, or SteerlabError."""
    from steerlab.activations.memory import check_positions
    from steerlab.interventions.positions import parse_positions

    _loads_or_steerlab_error(parse_positions, value)
    _loads_or_steerlab_error(check_positions, value)
    v = torch.ones(4)
    for build in (lambda: sl.Add(v, alpha=value), lambda: sl.Rotate(v, angle=value), lambda: sl.Scale(value),
                  lambda: sl.Clamp(v, value=value), lambda: sl.Add(v, positions=value)):
        made = _loads_or_steerlab_error(build)
        if made is not None:
            numbers = [getattr(made, k) for k in ("alpha", "angle", "value") if hasattr(made, k)]
            factor = getattr(made, "factor", None)
            numbers += factor if isinstance(factor, list) else [] if factor is None else [factor]
            assert all(math.isfinite(float(x)) for x in numbers)
