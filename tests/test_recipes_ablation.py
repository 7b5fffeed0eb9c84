"""sl.recipes.directional_ablation: Ablate at embed and at every layer's attn_out and mlp_out."""

from __future__ import annotations

import pytest
import torch

import steerlab as sl
from steerlab.directions.direction import Direction
from steerlab.sites import Site


def test_one_vector_everywhere(tiny_llama):
    r = torch.randn(64)
    steer = sl.recipes.directional_ablation(r)
    sites = [s for item in steer for s in item.targets(tiny_llama.n_layers)]
    assert sites == [Site("embed")] + [Site("attn_out", i) for i in range(3)] + [Site("mlp_out", i) for i in range(3)]
    assert all(isinstance(item, sl.Ablate) for item in steer)
    # every writer's output loses its component along r: the residual stream never holds any
    acts = tiny_llama.capture(["some text here"], sites="resid_post", positions="all", steering=steer)
    rhat = r / r.norm()
    for i in range(3):
        assert float((acts[f"layers.{i}.resid_post"][0] @ rhat).abs().max()) < 1e-4


def test_per_layer_vectors_and_layers():
    d = Direction({0: torch.ones(8), 2: torch.arange(8.0)})
    steer = sl.recipes.directional_ablation(d)
    embed, attn, _mlp = steer.interventions
    assert torch.equal(embed.direction, torch.ones(8))
    assert attn.targets(4) == [Site("attn_out", 0), Site("attn_out", 2)]
    only = sl.recipes.directional_ablation(d, layers=[2])
    assert torch.equal(only.interventions[0].direction, torch.arange(8.0))
    assert only.interventions[2].targets(4) == [Site("mlp_out", 2)]
    single = sl.recipes.directional_ablation(Direction({5: torch.ones(8)}), layers=[0, 1])
    assert single.interventions[1].targets(4) == [Site("attn_out", 0), Site("attn_out", 1)]
    with pytest.raises(sl.SteerlabError, match="holds vectors for layers"):
        sl.recipes.directional_ablation(d, layers=[1])
