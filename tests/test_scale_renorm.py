"""Scale(renorm=True): knock out components, then restore each token's norm (RefusalCliff head ablation)."""

import torch

import steerlab as sl


def test_renorm_restores_each_tokens_norm():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5)
    y = sl.Scale(0.0, site="attn.heads", layers=[0], index=[1], renorm=True)(x)
    ref = x.clone()
    ref[:, :, 1] = 0
    ref = ref * (x.flatten(2).norm(dim=-1) / ref.flatten(2).norm(dim=-1))[..., None, None]
    assert torch.allclose(y, ref, atol=1e-6)


def test_renorm_respects_the_position_mask():
    torch.manual_seed(1)
    x = torch.randn(1, 4, 6)
    mask = torch.tensor([[False, True, False, False]])
    y = sl.Scale(0.5, layers=[0], index=[0, 1], renorm=True)(x, mask=mask)
    assert torch.equal(y[:, [0, 2, 3]], x[:, [0, 2, 3]])
    assert torch.allclose(y[0, 1].norm(), x[0, 1].norm())


def test_renorm_round_trips_through_a_saved_recipe(tmp_path):
    recipe = sl.Steering([sl.Scale(0.0, site="attn.heads", layers=[0], index=[1], renorm=True)])
    recipe.save(tmp_path / "r.steer")
    assert sl.Steering.load(tmp_path / "r.steer").interventions[0].renorm is True
