"""Site names: parsing, expansion over layers, and clear errors."""

import pytest

from steerlab.errors import SiteError
from steerlab.sites import Site, expand_sites, normalize_layers, parse_site


def test_parse_names():
    assert parse_site("layers.3.resid_post") == Site("resid_post", 3)
    assert parse_site("layers.0.attn.heads") == Site("attn.heads", 0)
    assert parse_site("embed") == Site("embed")
    assert parse_site("layers.-1.mlp_out", n_layers=4) == Site("mlp_out", 3)


@pytest.mark.parametrize("bad", ["layers.x.resid_post", "resid", "layers.2", "layers.2.attn", 3])
def test_unknown_sites(bad):
    with pytest.raises(SiteError):
        parse_site(bad)


def test_layer_range():
    with pytest.raises(SiteError, match="out of range"):
        parse_site("layers.4.resid_post", n_layers=4)
    with pytest.raises(SiteError, match="out of range"):
        normalize_layers([0, 7], 4)
    assert normalize_layers(None, 3) == [0, 1, 2]
    assert normalize_layers([-1, 0, 0], 3) == [0, 2]
    assert normalize_layers(range(1, 3), 3) == [1, 2]


def test_expand_keeps_order_without_duplicates():
    sites = expand_sites(["resid_post", "layers.1.resid_post", "final"], [0, 1], 3)
    assert [s.name for s in sites] == ["layers.0.resid_post", "layers.1.resid_post", "final"]
    with pytest.raises(SiteError):
        expand_sites([], None, 3)


def test_depth_orders_the_forward_pass():
    names = ["final", "layers.1.resid_pre", "layers.0.mlp_out", "embed", "layers.0.attn_out"]
    ordered = sorted((parse_site(n) for n in names), key=lambda s: s.depth(2))
    assert [s.name for s in ordered] == ["embed", "layers.0.attn_out", "layers.0.mlp_out", "layers.1.resid_pre",
                                         "final"]
