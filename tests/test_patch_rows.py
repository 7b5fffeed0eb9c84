"""Per-row Patch recipes whose values list different numbers of positions share one batch."""

import torch

import steerlab as sl
from tiny import tiny_model


def test_patches_of_different_sizes_batch_like_one_by_one():
    model = tiny_model("llama")
    texts = ["abcdefgh", "abcdefgh", "hgfedcba"]
    torch.manual_seed(0)
    recipes = [sl.Patch(torch.randn(3, model.d_model), layers=[1], positions=[0, 2, 4]),
               sl.Patch(torch.randn(model.d_model), layers=[0], positions=[5]),
               sl.Patch(torch.randn(2, model.d_model), layers=[1], positions=[1, 3])]
    batched = model.logits(texts, steering=recipes)
    alone = torch.cat([model.logits([t], steering=r) for t, r in zip(texts, recipes)])
    assert torch.allclose(batched, alone, atol=1e-5)
