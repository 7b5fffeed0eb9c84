"""Ray capture: a pool of model actors on a local Ray cluster writes the same store as a local capture."""

from __future__ import annotations

import pytest
import torch

ray = pytest.importorskip("ray")

from steerlab.activations.store import DiskActivations
from steerlab.engines.ray import capture as ray_capture

TEXTS = ["Hello there.", "The cat sat on the mat and looked around the room.", "Why?", "Tell me a story",
         "One two three four five six", "A", "Paris is the capital of France.", "ok then", "What is 2+2?"]


@pytest.fixture(scope="module")
def cluster():
    # 2 CPUs and actors of 0.5: a pool of num_cpus=1 actors on 2 CPUs starves Ray Data's read task
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_capture_equals_local_and_resumes(cluster, smollm, tmp_path):
    local = smollm.capture(TEXTS, sites="resid_post", layers=[0, 5, 29], positions="last", batch_size=4,
                           out=tmp_path / "local")
    remote = ray_capture("smollm2", TEXTS, tmp_path / "ray", sites="resid_post", layers=[0, 5, 29],
                         positions="last", batch_size=4, actors=2, num_cpus=0.5, threads=1)
    assert isinstance(remote, DiskActivations) and len(remote) == len(TEXTS)
    for name in ("layers.0.resid_post", "layers.5.resid_post", "layers.29.resid_post"):
        torch.testing.assert_close(remote[name], local[name], rtol=1e-5, atol=1e-5)
    # the store is resumable: drop one shard from the manifest and its file; a second call refills only it
    import json

    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    gone = manifest["shards"][1]
    (tmp_path / "ray" / gone["file"]).unlink()
    again = ray_capture("smollm2", TEXTS, tmp_path / "ray", sites="resid_post", layers=[0, 5, 29],
                        positions="last", batch_size=4, actors=1, num_cpus=0.5, threads=1)
    torch.testing.assert_close(again["layers.5.resid_post"], local["layers.5.resid_post"], rtol=1e-5, atol=1e-5)


def test_ray_capture_all_positions_and_steering(cluster, smollm, tmp_path):
    import steerlab as sl

    steer = sl.Steering([sl.Add(torch.randn(smollm.d_model, generator=torch.Generator().manual_seed(0)),
                                alpha=2.0, layers=[2])])
    local = smollm.capture(TEXTS[:5], sites="layers.3.resid_post", positions="all", batch_size=2, steering=steer)
    remote = ray_capture("smollm2", TEXTS[:5], tmp_path / "ray", sites="layers.3.resid_post", positions="all",
                         batch_size=2, steering=steer, actors=1, num_cpus=0.5, threads=1)
    for a, b in zip(remote["layers.3.resid_post"], local["layers.3.resid_post"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    unsteered = smollm.capture(TEXTS[:1], sites="layers.3.resid_post", positions="all")
    assert not torch.allclose(unsteered["layers.3.resid_post"][0], remote["layers.3.resid_post"][0], atol=1e-3)


def test_ray_capture_refuses_bad_actors(tmp_path):
    from steerlab.errors import SteerlabError

    with pytest.raises(SteerlabError, match="actors"):
        ray_capture("smollm2", TEXTS, tmp_path / "x", actors=0)
