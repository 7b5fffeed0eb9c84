"""The server, for real: a loopback port, the official openai client, outputs equal to ``model.generate``."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

import steerlab as sl
from steerlab.serve import Limits, Registry, recipe_json, start, tensor_b64
from tiny import tiny_model

PROMPT = "hello there"
N = 10  # tokens per completion in these tests


def _vec(seed: int, d: int = 64) -> torch.Tensor:
    return torch.randn(d, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def direction():
    return sl.Direction({1: _vec(1), 2: _vec(2)}, meta={"method": "mean_diff", "layer": 2})


@pytest.fixture(scope="module")
def recipes(direction):
    return {
        "happy": sl.Steering([sl.Add(direction, alpha=3.0, layers=[1])]),
        "turn": sl.Steering([sl.Rotate(_vec(3), angle=40.0, layers=[0, 2])]),
        "cut": sl.Steering([sl.Ablate(_vec(4), layers=[1])]),
    }


@pytest.fixture(scope="module")
def server(model, recipes, direction):
    reg = Registry(model, recipes=dict(recipes), directions={"refusal": direction})
    limits = Limits(max_tokens=64, max_prompt_tokens=40, max_n=3, max_batch=8, max_queue=32, max_body_bytes=20_000)
    with start(model, reg, limits=limits) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="none", timeout=60, max_retries=0)


def solo(model, steering, prompt=PROMPT, chat=True, n=N):
    return model.generate([prompt], steering=steering, max_new_tokens=n, chat=chat)


def chat(client, model, prompt=PROMPT, n=N, **extra):
    return client.chat.completions.create(model=model.name, messages=[{"role": "user", "content": prompt}],
                                          max_tokens=n, temperature=0, extra_body=extra or None)


def ext(choice) -> dict:
    return choice.model_extra["steerlab"]


# --- OpenAI compatibility ---------------------------------------------------------------------------
def test_models_health_and_steering_listing(server, client, model):
    assert [m.id for m in client.models.list().data] == [model.name]
    health = httpx.get(server.base + "/health", timeout=10).json()
    assert health["status"] == "ok" and health["model"] == model.name
    listing = httpx.get(server.url + "/steering", timeout=10).json()
    assert {r["name"] for r in listing["recipes"]} == {"happy", "turn", "cut"}
    (d,) = listing["directions"]
    assert d["name"] == "refusal" and d["read_at"] == "layers.2.resid_post" and d["read_as"] == "projection"
    assert next(r for r in listing["recipes"] if r["name"] == "cut")["scalable"] is False


def test_chat_unsteered_equals_generate(client, model):
    r = chat(client, model)
    ref = solo(model, None)
    assert ext(r.choices[0])["tokens"] == ref.tokens[0]
    assert r.choices[0].message.content == ref.texts[0]
    assert r.usage.completion_tokens == len(ref.tokens[0])


@pytest.mark.parametrize("name", ["happy", "turn", "cut"])
def test_chat_steered_by_name_equals_generate(client, model, recipes, name):
    r = chat(client, model, steering=name)
    ref = solo(model, recipes[name])
    assert ext(r.choices[0])["tokens"] == ref.tokens[0]
    assert ref.tokens[0] != solo(model, None).tokens[0]  # the recipe changes the output, so the check means something


def test_scale_and_list_of_recipes(client, model, direction, recipes):
    r = chat(client, model, steering=[{"recipe": "happy", "scale": -0.5}, "turn"])
    hand = sl.Steering([sl.Add(direction, alpha=-1.5, layers=[1])]) + recipes["turn"]
    assert ext(r.choices[0])["tokens"] == solo(model, hand).tokens[0]


def test_inline_recipe_base64_and_by_direction_name(client, model, direction):
    v = _vec(9)
    inline = {"interventions": [{"kind": "add", "config": {"alpha": 2.0, "layers": [2], "site": "resid_post",
                                                           "positions": "all", "norm_match": False}},
                                {"kind": "add", "config": {"alpha": -1.0, "layers": [1], "site": "resid_post",
                                                           "positions": "all", "norm_match": False}}],
              "tensors": {"0.vector": tensor_b64(v), "1.vector": "refusal"}}
    r = chat(client, model, steering={"inline": inline})
    hand = sl.Steering([sl.Add(v, alpha=2.0, layers=[2]), sl.Add(direction, alpha=-1.0, layers=[1])])
    assert ext(r.choices[0])["tokens"] == solo(model, hand).tokens[0]


def test_recipe_json_round_trips_through_a_request(client, model, recipes):
    r = chat(client, model, steering={"inline": recipe_json(recipes["turn"])})
    assert ext(r.choices[0])["tokens"] == solo(model, recipes["turn"]).tokens[0]


def test_completions_and_streaming_agree(client, model, recipes):
    whole = client.completions.create(model=model.name, prompt=PROMPT, max_tokens=N, temperature=0,
                                      extra_body={"steering": "happy"})
    ref = solo(model, recipes["happy"], chat=False)
    assert whole.choices[0].text == ref.texts[0] and whole.object == "text_completion"
    parts, finish = [], None
    for chunk in client.completions.create(model=model.name, prompt=PROMPT, max_tokens=N, temperature=0, stream=True,
                                           extra_body={"steering": "happy"}):
        for c in chunk.choices:
            parts.append(c.text)
            finish = c.finish_reason or finish
    assert "".join(parts) == ref.texts[0] and finish in ("stop", "length")


def test_chat_stream_chunks(client, model, recipes):
    deltas, roles, tokens = [], [], 0
    stream = client.chat.completions.create(model=model.name, messages=[{"role": "user", "content": PROMPT}],
                                            max_tokens=N, temperature=0, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"steering": "turn", "read": ["refusal"]})
    usage = None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        usage = chunk.usage or usage
        for c in chunk.choices:
            roles.append(c.delta.role)
            deltas.append(c.delta.content or "")
            tokens += len((c.model_extra.get("steerlab") or {}).get("reads", {}).get("refusal", []))
    ref = solo(model, recipes["turn"])
    assert roles[0] == "assistant" and "".join(deltas) == ref.texts[0]
    assert tokens == len(ref.tokens[0]) == usage.completion_tokens


def test_compare_returns_the_unsteered_twin(client, model, recipes):
    r = chat(client, model, steering="happy", compare=True)
    e = ext(r.choices[0])
    assert e["tokens"] == solo(model, recipes["happy"]).tokens[0]
    assert e["unsteered"]["tokens"] == solo(model, None).tokens[0]
    assert e["unsteered"]["text"] == solo(model, None).texts[0]


def test_compare_streams_both_columns(client, model, recipes):
    steered, unsteered = [], []
    for chunk in client.chat.completions.create(model=model.name, messages=[{"role": "user", "content": PROMPT}],
                                                max_tokens=N, temperature=0, stream=True,
                                                extra_body={"steering": "happy", "compare": True}):
        for c in chunk.choices:
            twin = (c.model_extra.get("steerlab") or {}).get("unsteered")
            if twin:
                unsteered.append(twin["text"])
            else:
                steered.append(c.delta.content or "")
    assert "".join(steered) == solo(model, recipes["happy"]).texts[0]
    assert "".join(unsteered) == solo(model, None).texts[0]


def test_sampling_is_repeatable_under_a_seed_and_compare_shares_it(client, model):
    def run(seed):
        r = client.chat.completions.create(model=model.name, messages=[{"role": "user", "content": PROMPT}],
                                           max_tokens=N, temperature=1.0, top_p=0.9, seed=seed,
                                           extra_body={"compare": True})
        return ext(r.choices[0])

    a, b, c = run(5), run(5), run(6)
    assert a["tokens"] == b["tokens"] and a["tokens"] != c["tokens"]
    assert a["unsteered"]["tokens"] == a["tokens"]  # no recipe: the twin with the same seed is the same sample


def test_n_choices_and_stop_strings(client, model):
    r = client.chat.completions.create(model=model.name, messages=[{"role": "user", "content": PROMPT}],
                                       max_tokens=N, temperature=1.0, seed=1, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    full = chat(client, model, n=40).choices[0].message.content  # random bytes: pick a character seen once
    at = next(i for i in range(1, len(full)) if full[i] != "\ufffd" and full.find(full[i]) == i)
    stop = full[at]
    cut = client.chat.completions.create(model=model.name, messages=[{"role": "user", "content": PROMPT}],
                                         max_tokens=40, temperature=0, stop=[stop, "never-seen"])
    assert cut.choices[0].message.content == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


# --- read-outs --------------------------------------------------------------------------------------
def test_reads_score_every_generated_token(client, model, direction, recipes):
    """Each token's score is the projection, on the unit direction at layer 2, of the state that produced it:
    recomputed by hand with a capture of the prompt plus the generated tokens under the same recipe."""
    r = chat(client, model, steering="happy", read=["refusal"])
    e = ext(r.choices[0])
    tokens, scores = e["tokens"], e["reads"]["refusal"]
    assert len(scores) == len(tokens) > 0
    prompt = model.tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                                 tokenize=False)
    prompt_ids = model.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + tokens[:-1]])
    states = {}

    def grab(mod, args, out):
        states["h"] = out[0] if isinstance(out, tuple) else out

    handle = model.hf_model.model.layers[2].register_forward_hook(grab)
    try:
        with torch.inference_mode():  # the recipe adds 3 * direction[1] to layer 1's output: done here by hand
            h1 = model.hf_model.model.layers[1].register_forward_hook(
                lambda m, a, o: (o[0] + 3.0 * direction[1], *o[1:]) if isinstance(o, tuple) else o + 3.0 * direction[1])
            try:
                model.hf_model(input_ids=ids)
            finally:
                h1.remove()
    finally:
        handle.remove()
    unit = direction[2] / direction[2].norm()
    expected = (states["h"][0, len(prompt_ids) - 1:] @ unit).tolist()
    assert scores == pytest.approx(expected, abs=1e-4)


# --- batching ---------------------------------------------------------------------------------------
def _eight_recipes(direction):
    return [None,
            sl.Steering([sl.Add(direction, alpha=3.0, layers=[1])]),
            sl.Steering([sl.Add(_vec(11), alpha=-2.0, layers=[0, 1, 2])]),
            sl.Steering([sl.Rotate(_vec(12), angle=30.0, layers=[1])]),
            sl.Steering([sl.Ablate(_vec(13), layers=[0, 2])]),
            sl.Steering([sl.Add(_vec(14), alpha=2.0, layers=[2], positions="generated")]),
            sl.Steering([sl.Add(_vec(15), alpha=1.5, layers=[1]), sl.Ablate(_vec(16), layers=[2])]),
            sl.Steering([sl.Rotate(_vec(17), angle=-25.0, layers=[0, 1, 2])])]


def test_eight_concurrent_requests_with_eight_recipes_each_equal_their_solo_run(server, client, model, direction):
    recipes = _eight_recipes(direction)
    prompts = [f"p{i} " + "x" * i for i in range(8)]
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(8, timeout=30)

    def one(i):
        try:
            steering = {"inline": recipe_json(recipes[i])} if recipes[i] is not None else None
            barrier.wait()
            r = chat(client, model, prompt=prompts[i], n=16, steering=steering)
            results[i] = ext(r.choices[0])["tokens"]
        except BaseException as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    before = server.engine.stats()["rows_max"]
    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 8
    for i in range(8):
        assert results[i] == solo(model, recipes[i], prompt=prompts[i], n=16).tokens[0], f"row {i}"
    assert max(before, server.engine.stats()["rows_max"]) > 1  # they really shared batches


def test_a_request_joins_a_running_batch_between_steps(server, model, recipes):
    """B arrives while A decodes; B finishes while A still streams, and both equal their solo runs."""
    body = {"model": model.name, "messages": [{"role": "user", "content": PROMPT}], "temperature": 0,
            "max_tokens": 64, "stream": True, "steering": "turn"}
    admissions = server.engine.stats()["admissions"]
    a_text, b_done_while_a_ran = [], False
    with httpx.Client(timeout=60) as http, http.stream("POST", server.url + "/chat/completions", json=body) as resp:
        lines = resp.iter_lines()
        for line in lines:
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                a_text.append(json.loads(line[6:])["choices"][0]["delta"]["content"])
                if len(a_text) == 3:
                    break
        b = http.post(server.url + "/chat/completions", json={
            "model": model.name, "messages": [{"role": "user", "content": "other"}], "temperature": 0,
            "max_tokens": 4, "steering": "happy"}).json()
        b_done_while_a_ran = not resp.is_closed
        for line in lines:
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if chunk["choices"] and chunk["choices"][0].get("delta", {}).get("content"):
                    a_text.append(chunk["choices"][0]["delta"]["content"])
    assert b_done_while_a_ran
    assert b["choices"][0]["steerlab"]["tokens"] == solo(model, recipes["happy"], prompt="other", n=4).tokens[0]
    assert "".join(a_text) == solo(model, recipes["turn"], n=64).texts[0]
    assert server.engine.stats()["admissions"] >= admissions + 2


def test_a_client_that_disconnects_frees_its_row(server, model):
    body = {"model": model.name, "messages": [{"role": "user", "content": PROMPT}], "temperature": 0.0,
            "max_tokens": 64, "stream": True}
    tokens_before = server.engine.stats()["tokens"]
    with httpx.Client(timeout=60) as http, http.stream("POST", server.url + "/chat/completions", json=body) as resp:
        for n, _line in enumerate(resp.iter_lines()):
            if n >= 4:
                break
    deadline = time.monotonic() + 20
    while server.engine.stats()["rows"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.engine.stats()["rows"] == 0
    # far fewer than the 64 tokens it asked for (one every step until the row went)
    assert server.engine.stats()["tokens"] - tokens_before < 40


# --- errors -----------------------------------------------------------------------------------------
def _bad(client, m, error=openai.BadRequestError, **kwargs):
    body = {"model": m.name, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4, **kwargs}
    extra = {k: body.pop(k) for k in ("steering", "read", "compare") if k in body}
    with pytest.raises(error) as info:
        client.chat.completions.create(**body, extra_body=extra or None)
    return info.value.body


@pytest.mark.parametrize("steering, words", [
    ("nope", "'nope' is not registered"),
    ("recipes/happy.steer", "cannot name a file"),
    ({"recipe": "cut", "scale": 0.5}, "has no strength"),
    ({"recipe": "happy", "scale": "lots"}, "must be a finite number"),
    ({"inline": {"interventions": [{"kind": "add", "config": {"layers": [1]}}], "tensors": {"0.vector": "@@"}}},
     "neither base64"),
    ({"inline": {"interventions": [{"kind": "add", "config": {"layers": [1]}}],
                 "tensors": {"0.vector": tensor_b64(torch.ones(10))}}}, "expected d_model=64"),
    ({"inline": {"interventions": [{"kind": "add", "config": {"layers": [1]}}],
                 "tensors": {"0.vector": tensor_b64(torch.full((64,), float("nan")))}}}, "NaN"),
    ({"inline": {"interventions": [{"kind": "teleport", "config": {}}]}}, "unknown intervention kind"),
    ({"inline": {"interventions": [{"kind": "add", "config": {"layers": [7]}}],
                 "tensors": {"0.vector": tensor_b64(torch.ones(64))}}}, "layer"),
    ({"inline": "happy.steer"}, "must be a recipe object"),
    ({"recipe": "happy", "path": "x"}, "unknown key 'path'"),
])
def test_bad_steering_is_400_naming_the_field(client, model, steering, words):
    body = _bad(client, model, steering=steering)
    assert body["param"] == "steering" and body["type"] == "invalid_request_error"
    assert words in body["message"]


def test_bad_fields_and_limits(server, client, model):
    assert _bad(client, model, read=["nope"])["param"] == "read"
    assert _bad(client, model, max_tokens=65)["param"] == "max_tokens"  # over --max-tokens
    assert _bad(client, model, temperature=3)["param"] == "temperature"
    assert _bad(client, model, n=4)["param"] == "n"
    assert _bad(client, model, logprobs=True)["param"] == "logprobs"
    assert _bad(client, model, messages=[{"role": "user", "content": "y" * 100}])["code"] == "context_length_exceeded"
    assert _bad(client, model, error=openai.NotFoundError, model="gpt-4")["code"] == "model_not_found"
    with pytest.raises(openai.APIStatusError) as info:  # over --max-body-bytes
        chat(client, model, prompt="z" * 30_000)
    assert info.value.status_code == 413 and info.value.body["code"] == "request_too_large"
    raw = httpx.post(server.url + "/chat/completions", content=b"{not json", timeout=10)
    assert raw.status_code == 400 and "not valid JSON" in raw.json()["error"]["message"]
    assert httpx.get(server.url + "/nothing", timeout=10).json()["error"]["code"] == "not_found"


def test_a_bad_request_does_not_disturb_the_others(client, model, recipes):
    out = {}

    def good():
        out["r"] = chat(client, model, n=16, steering="happy")

    t = threading.Thread(target=good)
    t.start()
    for _ in range(5):
        _bad(client, model, steering="nope")
    t.join(timeout=60)
    assert ext(out["r"].choices[0])["tokens"] == solo(model, recipes["happy"], n=16).tokens[0]


def test_a_full_queue_is_429_and_the_rest_complete(model):
    with start(model, Registry(model), limits=Limits(max_batch=1, max_queue=1, max_tokens=64)) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="none", timeout=60, max_retries=0)
        codes: list[int] = []

        def one():
            try:
                client.chat.completions.create(model=model.name, messages=[{"role": "user", "content": PROMPT}],
                                               max_tokens=64, temperature=0)
                codes.append(200)
            except openai.RateLimitError as exc:
                assert exc.body["code"] == "queue_full"
                codes.append(429)

        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert max(codes) == 429 and codes.count(200) >= 1 and len(codes) == 4


def test_api_key(model):
    with start(model, Registry(model), api_key="s3cret") as srv:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.url, api_key="wrong", max_retries=0, timeout=30).models.list()
        good = openai.OpenAI(base_url=srv.url, api_key="s3cret", max_retries=0, timeout=30)
        assert good.models.list().data[0].id == model.name
        assert httpx.get(srv.base + "/health", timeout=10).status_code == 200  # the health check stays open


def test_server_binds_loopback_by_default(server):
    assert server.host == "127.0.0.1"


def test_registry_refuses_bad_registrations(model, direction):
    from steerlab.errors import SteerlabError

    with pytest.raises(SteerlabError, match="registered twice"):
        Registry(model, recipes={"x": sl.Steering([sl.Add(_vec(1), layers=[1])])}, directions={"x": direction})
    with pytest.raises(SteerlabError, match="width 32"):
        Registry(model, directions={"narrow": sl.Direction({1: torch.ones(32)})})


@pytest.mark.slow
def test_embedded_model_end_to_end(smollm):
    """The embedded model through the server: a sentiment direction as a recipe equals model.generate, and
    the read-out of the same direction is higher on the steered completion."""
    full = sl.data.load("sentiment")
    pairs = sl.data.ContrastiveSet(positive=full.positive[:16], negative=full.negative[:16])
    d = sl.directions.mean_diff(smollm, pairs, layers=[10, 12])
    steer = sl.Steering([sl.Add(d, alpha=4.0, layers=[10])])
    with start(smollm, Registry(smollm, recipes={"happy": steer}, directions={"joy": d})) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="none", timeout=120, max_retries=0)
        r = client.chat.completions.create(model=smollm.name, messages=[{"role": "user", "content": "Describe rain."}],
                                           max_tokens=12, temperature=0,
                                           extra_body={"steering": "happy", "compare": True, "read": ["joy"]})
    e = ext(r.choices[0])
    ref = smollm.generate(["Describe rain."], steering=steer, max_new_tokens=12)
    assert e["tokens"] == ref.tokens[0] and r.choices[0].message.content == ref.texts[0]
    assert e["unsteered"]["tokens"] == smollm.generate(["Describe rain."], max_new_tokens=12).tokens[0]
    steered, plain = e["reads"]["joy"], e["unsteered"]["reads"]["joy"]
    assert sum(steered) / len(steered) > sum(plain) / len(plain)


def test_cli_help_and_bad_flags():
    from typer.testing import CliRunner

    from steerlab.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "steerlab serve --recipe" in result.output
    bad = runner.invoke(app, ["serve", "--recipe", "no-equals-sign"])
    assert bad.exit_code == 2 and "NAME=PATH" in bad.output
    bad = runner.invoke(app, ["serve", "--engine", "tgi"])
    assert bad.exit_code == 2 and "transformers or vllm" in bad.output
