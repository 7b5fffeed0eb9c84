"""steerlab.io: atomic writes, JSON, hashes, and artifact saves that never delete user data."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

import steerlab as sl
from steerlab import io
from steerlab.activations import ShardWriter
from steerlab.errors import DataError, SteerlabError


def _direction() -> sl.Direction:
    return sl.Direction({1: torch.tensor([1.0, 2.0, 3.0])}, meta={"method": "test"})


def _recipe() -> sl.Steering:
    return sl.Steering([sl.Add(torch.ones(3), alpha=2.0, layers=[1])])


SAVES = {"direction": (_direction, sl.Direction.load), "steering": (_recipe, sl.Steering.load)}


@pytest.mark.parametrize("kind", SAVES)
def test_a_save_never_removes_a_folder_that_is_not_its_artifact(tmp_path, kind):
    make, _ = SAVES[kind]
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("precious")
    with pytest.raises(SteerlabError, match="not a saved"):
        make().save(target)
    with pytest.raises(SteerlabError, match="not a saved"):
        make().save(target, overwrite=True)
    assert (target / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # nothing left beside it
    file = tmp_path / "a-file"
    file.write_text("also precious")
    with pytest.raises(SteerlabError):
        make().save(file, overwrite=True)
    assert file.read_text() == "also precious"


@pytest.mark.parametrize("kind", SAVES)
def test_a_save_replaces_its_own_artifact_only_with_overwrite(tmp_path, kind):
    make, load = SAVES[kind]
    target = make().save(tmp_path / "a")
    with pytest.raises(SteerlabError, match="overwrite=True"):
        make().save(target)
    if kind == "direction":
        newer = sl.Direction({2: torch.tensor([0.0, 1.0, 0.0])}, meta={"method": "newer"})
    else:
        newer = sl.Steering([sl.Ablate(torch.tensor([0.0, 1.0, 0.0]), layers=[2])])
    newer.save(target, overwrite=True)
    back = load(target)
    if kind == "direction":
        assert back.layers == [2] and back.meta["method"] == "newer"
    else:
        assert [type(i).__name__ for i in back] == ["Ablate"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no temporary or old folder left


def test_a_failed_save_leaves_the_old_artifact_and_no_debris(tmp_path):
    target = _direction().save(tmp_path / "d")
    bad = sl.Direction({1: torch.zeros(3)}, meta={"unsaveable": object()})
    with pytest.raises(TypeError):
        bad.save(target, overwrite=True)
    assert sl.Direction.load(target).meta["method"] == "test"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_a_capture_refuses_a_folder_of_other_files(tmp_path):
    target = tmp_path / "acts"
    target.mkdir()
    (target / "data.csv").write_text("a,b\n")
    with pytest.raises(SteerlabError, match="no steerlab capture"):
        ShardWriter(target, sites=["layers.0.resid_post"], positions="last", n_texts=1, key={})
    assert [p.name for p in target.iterdir()] == ["data.csv"]
    empty = tmp_path / "empty"
    empty.mkdir()
    ShardWriter(empty, sites=["layers.0.resid_post"], positions="last", n_texts=1, key={})
    assert io.is_artifact(empty, "manifest.json", "steerlab.activations/1")


def test_atomic_write_replaces_whole_files_and_cleans_up_on_failure(tmp_path):
    path = tmp_path / "sub" / "x.json"
    io.write_json(path, {"a": torch.tensor([1.5, 2.0]), "b": (1, 2)})
    assert json.loads(path.read_text()) == {"a": [1.5, 2.0], "b": [1, 2]}
    assert io.read_json(path) == {"a": [1.5, 2.0], "b": [1, 2]}

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        io.atomic_write(path, broken)
    assert json.loads(path.read_text())["b"] == [1, 2]
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]


def test_read_json_errors_are_one_clear_line(tmp_path):
    with pytest.raises(DataError, match="no recipe at"):
        io.read_json(tmp_path / "missing.json", "recipe")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(DataError, match="not valid JSON"):
        io.read_json(tmp_path / "bad.json")


def test_hashes_match_sha256_and_keep_their_old_values(tmp_path):
    texts = ["a", "bc"]
    assert io.texts_hash(texts) == hashlib.sha256(b"a\0bc\0").hexdigest()[:16]
    assert sl.activations.texts_hash is io.texts_hash
    pairs = sl.data.ContrastiveSet(["p"], ["n"], "x")
    assert pairs.hash == hashlib.sha256(b"p\0n\1").hexdigest()[:16]
    (tmp_path / "f").write_bytes(b"hello" * 1000)
    assert io.file_hash(tmp_path / "f", chunk=7) == hashlib.sha256(b"hello" * 1000).hexdigest()[:16]
    a = {"w": torch.tensor([1.0, 2.0])}
    assert io.tensor_hash(a) == io.tensor_hash({"w": torch.tensor([1.0, 2.0], dtype=torch.float64)})
    assert io.tensor_hash(a) != io.tensor_hash({"w": torch.tensor([1.0, 2.5])})
