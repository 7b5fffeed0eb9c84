"""Steering recipes: JSON + safetensors round trip, provenance, refusing a model of another shape."""

from __future__ import annotations

import json

import pytest
import torch

import steerlab as sl
from tiny import tiny_model


def _recipe(m):
    d = sl.Direction({0: torch.randn(m.d_model), 2: torch.randn(m.d_model)},
                     meta={"model": m.fingerprint, "method": "mean_diff"})
    return sl.Steering([
        sl.Add(d, alpha=2.0),
        sl.Ablate(torch.randn(2, m.d_model), layers=[1], positions="generated"),
        sl.Rotate(torch.randn(m.d_model), angle=15.0, plane=torch.randn(m.d_model), layers=[0, 1],
                  mode="absolute", adaptive=True, threshold=0.1),
        sl.Clamp(torch.randn(m.d_model), min=-1.0, max=2.0, layers=[2], positions=[0, -1]),
        sl.Scale(0.0, site="attn.heads", layers=[1], index=[0, 2]),
        sl.Patch(torch.randn(2, m.d_model), layers=[0], positions=[1, 2], direction=torch.randn(m.d_model)),
        sl.Conditional(sl.Add(torch.randn(m.d_model), layers=[2]), torch.randn(m.d_model), layer=1,
                       threshold=0.05, comparator="<", metric="cast"),
    ])


def test_round_trip_gives_identical_outputs(tmp_path):
    m = tiny_model("llama")
    recipe = _recipe(m)
    assert recipe.meta["model"]["shape_hash"] == m.fingerprint["shape_hash"]
    path = recipe.save(tmp_path / "r.steer")
    doc = json.loads((path / "recipe.json").read_text())
    assert [e["kind"] for e in doc["interventions"]] == ["add", "ablate", "rotate", "clamp", "scale", "patch",
                                                          "conditional"]
    loaded = sl.Steering.load(path, model=m)
    texts = ["one text", "and another one"]
    assert torch.equal(m.logits(texts, steering=loaded), m.logits(texts, steering=recipe))
    a = m.generate(texts, steering=recipe, max_new_tokens=6)
    b = m.generate(texts, steering=loaded, max_new_tokens=6)
    assert a.tokens == b.tokens


def test_a_recipe_for_another_shape_is_refused(tmp_path):
    small, other = tiny_model("llama"), tiny_model("gpt2")
    path = _recipe(small).save(tmp_path / "r.steer")
    with pytest.raises(sl.SteerlabError, match="made for"):
        sl.Steering.load(path, model=other)
    with pytest.raises(sl.SteerlabError, match="made for"):
        other.generate(["hi"], steering=sl.Steering.load(path))


def test_loading_garbage_is_a_clear_error(tmp_path):
    with pytest.raises(sl.SteerlabError, match="no steering recipe"):
        sl.Steering.load(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "recipe.json").write_text("{not json")
    with pytest.raises(sl.SteerlabError, match="not valid JSON"):
        sl.Steering.load(tmp_path / "bad")


def test_steering_takes_only_interventions():
    with pytest.raises(sl.SteerlabError, match="takes interventions"):
        sl.Steering(["add"])


def test_direction_round_trip_and_shape_check(tmp_path):
    m = tiny_model("llama")
    d = sl.Direction({1: torch.randn(m.d_model)}, meta={"model": m.fingerprint, "method": "pca"})
    loaded = sl.Direction.load(d.save(tmp_path / "d.direction"), model=m)
    assert torch.equal(loaded[1], d[1]) and loaded.meta["method"] == "pca"
    with pytest.raises(sl.SteerlabError, match="made for"):
        sl.Direction.load(tmp_path / "d.direction", model=tiny_model("gpt2"))
    assert torch.allclose(d.unit()[1].norm(), torch.tensor(1.0))
