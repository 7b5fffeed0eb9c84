"""Ray generation: a sweep whose generations run on Ray actors equals the same sweep run locally."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

import steerlab as sl
from steerlab.engines.ray import RayGenerator
from steerlab.errors import SteerlabError


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_sweep_on_ray_actors_equals_the_local_sweep(cluster, smollm):
    prompts = sl.data.prompts("neutral")[:3]
    fitted = sl.recipes.fit(smollm, "add", sl.data.load("sentiment"))
    scorers = [sl.evaluate.Sentiment()]
    local = sl.evaluate.sweep(smollm, fitted, strengths=[0.0, 4.0], prompts=prompts, scorers=scorers,
                              max_new_tokens=8, batch_size=2)
    gen = RayGenerator("smollm2", actors=2, batch_size=2, num_cpus=0.5, threads=1)
    try:
        remote = sl.evaluate.sweep(smollm, fitted, strengths=[0.0, 4.0], prompts=prompts, scorers=scorers,
                                   max_new_tokens=8, generate=gen)
    finally:
        gen.close()
    assert [r["text"] for r in remote.attrs["samples"]] == [r["text"] for r in local.attrs["samples"]]
    assert remote["sentiment"].tolist() == local["sentiment"].tolist()
    steered = [r["text"] for r in local.attrs["samples"] if r["strength"] == 4.0]
    plain = [r["text"] for r in local.attrs["samples"] if r["strength"] == 0.0]
    assert steered != plain  # the recipes really travelled to the actors and steered


def test_bad_arguments_are_one_line(cluster):
    with pytest.raises(SteerlabError, match="actors"):
        RayGenerator("smollm2", actors=0)
    with pytest.raises(SteerlabError, match="load must be"):
        RayGenerator(3)  # type: ignore[arg-type]


def test_compare_cli_refuses_bad_ray_flags_before_loading(tmp_path):
    from typer.testing import CliRunner

    from steerlab.cli import app

    r = CliRunner().invoke(app, ["compare", "--out", str(tmp_path / "c"), "--ray-actors", "-2"])
    assert r.exit_code == 2 and "--ray-actors" in r.output
