"""``steerlab serve`` on the vLLM engine: the same HTTP API, outputs equal to steerlab's transformers path.

The server runs in this process on the session's vLLM engine (continuous batching through vLLM's own
scheduler); one test starts the real command line, ``steerlab serve --engine vllm``, in a subprocess.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

pytest.importorskip("vllm")
pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

import steerlab as sl
from steerlab.engines.vllm.engine import VLLMEngine
from steerlab.serve import Limits, Registry, recipe_json, start

PROMPT = "Tell me about the sea."
N = 12


def _vec(seed: int) -> torch.Tensor:
    return torch.randn(576, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model():
    return sl.load("smollm2")


@pytest.fixture(scope="module")
def direction():
    return sl.Direction({10: _vec(1), 12: _vec(2)}, meta={"method": "mean_diff", "layer": 10})


@pytest.fixture(scope="module")
def recipes(direction):
    return {
        "happy": sl.Steering([sl.Add(direction, alpha=6.0, layers=[10])]),
        "turn": sl.Steering([sl.Rotate(_vec(3), angle=50.0, layers=[8, 12])]),
        "cut": sl.Steering([sl.Ablate(_vec(4), layers=[6])]),
    }


@pytest.fixture(scope="module")
def server(llm, model, recipes, direction):
    reg = Registry(model, recipes=dict(recipes), directions={"probe": direction})
    engine = VLLMEngine(llm, model.name, reg.readouts(), max_queue=32)
    with start(model, reg, limits=Limits(max_tokens=64, max_batch=16), engine=engine) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="none", timeout=120, max_retries=0)


def solo(model, recipe, prompt=PROMPT, n=N):
    return model.generate([prompt], steering=[recipe], max_new_tokens=n, chat=True)


def chat(client, model, prompt=PROMPT, n=N, **extra):
    return client.chat.completions.create(model=model.name, messages=[{"role": "user", "content": prompt}],
                                          temperature=0, max_tokens=n, extra_body=extra or None)


def ext(choice):
    return choice.model_extra["steerlab"]


@pytest.mark.parametrize("name", ["happy", "turn", "cut"])
def test_steered_chat_equals_the_transformers_path(client, model, recipes, name):
    r = chat(client, model, steering=name)
    assert ext(r.choices[0])["tokens"] == solo(model, recipes[name]).tokens[0]
    assert r.choices[0].message.content == solo(model, recipes[name]).texts[0]


def test_unsteered_and_steered_differ_and_compare_gives_the_twin(client, model, recipes):
    r = chat(client, model, steering="happy", compare=True)
    unsteered = ext(r.choices[0])["unsteered"]
    assert unsteered["tokens"] == solo(model, None).tokens[0]
    assert ext(r.choices[0])["tokens"] != unsteered["tokens"]  # steering did something


def test_streaming_joins_to_the_same_text(client, model):
    stream = client.chat.completions.create(model=model.name, messages=[{"role": "user", "content": PROMPT}],
                                            temperature=0, max_tokens=N, stream=True,
                                            extra_body={"steering": "turn"})
    parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in parts if p]) > 1  # it streamed
    assert "".join(parts) == chat(client, model, steering="turn").choices[0].message.content


def test_reads_score_every_generated_token(client, model, direction):
    r = chat(client, model, read=["probe"])
    tokens, reads = ext(r.choices[0])["tokens"], ext(r.choices[0])["reads"]["probe"]
    assert len(reads) == len(tokens) == N
    # the score of generated token k is w . h(layer 10's resid_post) at the state that produced it
    ids = model.tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                              tokenize=True, return_dict=False)
    with torch.no_grad():  # the plain model's hidden states: index 11 is layer 10's output
        hidden = model.hf_model(input_ids=torch.tensor([list(ids) + tokens[:-1]]), output_hidden_states=True)
    want = hidden.hidden_states[11][0, len(ids) - 1:] @ (direction[10] / direction[10].norm())  # unit vector
    torch.testing.assert_close(torch.tensor(reads), want.float(), rtol=1e-3, atol=1e-3)


def test_eight_concurrent_requests_with_different_recipes_each_equal_their_solo_run(client, model, direction):
    recipes = [None] + [sl.Steering([sl.Add(_vec(10 + i), alpha=4.0, layers=[4 + 2 * i])]) for i in range(7)]
    prompts = [f"Write a line about {w}." for w in ("rain", "bread", "cats", "trains", "snow", "tea", "maps", "bees")]
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(8, timeout=60)

    def one(i):
        try:
            steering = {"inline": recipe_json(recipes[i])} if recipes[i] is not None else None
            barrier.wait()
            results[i] = ext(chat(client, model, prompt=prompts[i], steering=steering).choices[0])["tokens"]
        except BaseException as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and len(results) == 8
    for i in range(8):
        assert results[i] == solo(model, recipes[i], prompt=prompts[i]).tokens[0], f"row {i}"


def test_a_request_joins_while_another_streams_and_a_disconnect_frees_its_row(server, model, recipes):
    body = {"model": model.name, "messages": [{"role": "user", "content": PROMPT}], "temperature": 0,
            "max_tokens": 64, "stream": True, "ignore_eos": True}
    with httpx.Client(timeout=120) as http:
        with http.stream("POST", server.url + "/chat/completions", json=body) as resp:
            seen = 0
            for line in resp.iter_lines():
                if line.startswith("data: {"):
                    seen += 1
                    if seen == 3:
                        break
            b = http.post(server.url + "/chat/completions", json={
                "model": model.name, "messages": [{"role": "user", "content": "other"}], "temperature": 0,
                "max_tokens": 4, "steering": "happy"}).json()
            assert not resp.is_closed  # B finished while A was still decoding
        assert b["choices"][0]["steerlab"]["tokens"] == solo(model, recipes["happy"], prompt="other", n=4).tokens[0]
    deadline = time.monotonic() + 30
    while server.engine.stats()["running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.engine.stats()["running"] == 0  # A's row was aborted when its client left


def test_a_recipe_vllm_cannot_apply_is_a_400_and_the_server_keeps_serving(client, model):
    bad = sl.Steering([sl.Add(_vec(5), alpha=2.0, layers=[3], site="attn_out")])
    with pytest.raises(openai.BadRequestError):
        chat(client, model, steering={"inline": recipe_json(bad)})
    assert ext(chat(client, model, n=3).choices[0])["tokens"] == solo(model, None, n=3).tokens[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_command_line_serves_with_vllm(tmp_path, model, recipes):
    recipes["happy"].save(tmp_path / "happy.steer")
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "steerlab.cli", "serve", "--engine", "vllm", "--model", "smollm2", "--port", str(port),
           "--recipe", f"happy={tmp_path / 'happy.steer'}", "--max-tokens", "64", "--max-prompt-tokens", "256"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else "exited"
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(1)
        assert httpx.get(base + "/v1/steering", timeout=10).json()["recipes"][0]["name"] == "happy"
        body = {"model": model.name, "messages": [{"role": "user", "content": PROMPT}], "temperature": 0, "max_tokens": N,
                "steering": "happy"}
        r = httpx.post(base + "/v1/chat/completions", json=body, timeout=120).json()
        assert "choices" in r, r
        assert r["choices"][0]["steerlab"]["tokens"] == solo(model, recipes["happy"]).tokens[0]
        assert httpx.get(base + "/", timeout=10).status_code == 200  # the playground
        stats = httpx.get(base + "/health", timeout=10).json()
        assert json.dumps(stats).count("vllm")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
