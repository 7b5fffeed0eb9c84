"""Concept-injection introspection: grader, concept vectors, injection span, sweep and the LLM-judge client."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest
import torch

import steerlab as sl
from steerlab.analysis.introspection import (
    Judgement,
    concept_vectors,
    grade,
    injected_tokens,
    injection,
    introspection,
)
from steerlab.evaluate.judge import OpenAIJudge


@pytest.mark.parametrize("reply,concept,want", [
    ("Yes, I notice an injected thought. It is about the ocean.", "ocean", (True, True, True)),
    ("Yes. The thought is about oceans and waves.", "ocean", (True, True, True)),
    ("The ocean is vast. Yes, I detect a thought about it.", "ocean", (True, False, True)),  # named before claim
    ("No, I don't notice an injected thought.", "ocean", (False, False, False)),
    ("I do not detect anything unusual.", None, (False, False, False)),
    ("I notice nothing about bread.", "bread", (False, False, True)),
    ("I think I sense something: snow.", "snow", (True, True, True)),
    ("Yes, I detect a thought about music.", "snow", (True, False, False)),  # wrong concept
    ("The weather is nice today.", "snow", (False, False, False)),
])
def test_rule_based_grader(reply, concept, want):
    j = grade(reply, concept)
    assert (j.detected, j.identified, j.mentioned) == want


def test_concept_vectors_match_hidden_states(tiny_llama):
    tok = tiny_llama.tokenizer
    words, base = ["ab", "cd"], ["ef", "gh", "ij"]
    got = concept_vectors(tiny_llama, words, base, layers=[1])

    def h(word):
        text = tok.apply_chat_template([{"role": "user", "content": f"Tell me about {word}."}],
                                       add_generation_prompt=True, tokenize=False)
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            return tiny_llama.hf_model(input_ids=ids, output_hidden_states=True).hidden_states[2][0, -1]

    mean = torch.stack([h(b) for b in base]).mean(0)
    for w in words:
        assert torch.allclose(got[w][1], h(w) - mean, atol=1e-5)
    with pytest.raises(sl.SteerlabError, match="disjoint"):
        concept_vectors(tiny_llama, ["ab"], ["ab", "cd"])


def test_injection_starts_at_the_trial_marker_and_runs_through_generation(tiny_llama):
    tok, hf = tiny_llama.tokenizer, tiny_llama.hf_model
    prompt = "Some preamble here.\n\nTrial 1: anything?"
    n = injected_tokens(tiny_llama, prompt)
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    first = len(tok(text[:text.index("\n\nTrial 1")], add_special_tokens=False)["input_ids"])  # bytes: exact
    assert n == len(ids) - first
    v = torch.randn(tiny_llama.d_model, generator=torch.Generator().manual_seed(0))
    got = tiny_llama.generate(prompt, steering=injection(v, 1, 3.0, n), max_new_tokens=5, chat=True).tokens[0]

    # hand reference: greedy, no cache, a hook adding 3v at block 1's output on every token from ``first`` on
    def hook(mod, args, output):
        h = output[0] if isinstance(output, tuple) else output
        h = h.clone()
        h[:, first:] += 3.0 * v
        return (h, *output[1:]) if isinstance(output, tuple) else h

    seq = list(ids)
    handle = hf.model.layers[1].register_forward_hook(hook)
    try:
        with torch.no_grad():
            for _ in range(5):
                seq.append(int(hf(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
    finally:
        handle.remove()
    assert list(got) == seq[len(ids):]


def test_introspection_sweep_table_and_custom_judge(tiny_llama):
    calls = []

    def judge(reply, concept):
        calls.append(concept)
        return Judgement(concept == "ab", concept == "ab", False)

    result = introspection(tiny_llama, ["ab", "cd"], layers=[0, 2], strengths=(1, 4), baseline=["ef", "gh"],
                           prompt="Hi.\n\nTrial 1: notice?", max_new_tokens=3, temperature=0, judge=judge,
                           progress=False)
    t = result.table
    assert len(t) == 4 and (t["n"] == 2).all() and (t["detection"] == 0.5).all()
    assert (t["false_alarm"] == 0.0).all() and (t["n_control"] == 2).all()
    assert calls.count(None) == 2 and len(calls) == 2 * 2 * 2 + 2
    assert len(result.norms) == 4


class _FakeJudge(BaseHTTPRequestHandler):
    seen: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeJudge.seen.append((self.path, self.headers.get("Authorization"), body))
        content = body["messages"][0]["content"]
        verdict = {"detected": "Yes" in content, "identified": "ocean" in content.split("Its reply")[1]}
        answer = {"choices": [{"message": {"role": "assistant", "content": "```json\n" + json.dumps(verdict) + "\n```"}}]}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_openai_judge_client_against_a_local_fake_server():
    server = HTTPServer(("127.0.0.1", 0), _FakeJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        judge = OpenAIJudge(f"http://127.0.0.1:{server.server_port}/v1", model="fake", api_key="k")
        j = judge("Yes, I notice a thought about the ocean.", "ocean")
        assert (j.detected, j.identified, j.mentioned) == (True, True, True)
        j = judge("I notice nothing.", None)
        assert (j.detected, j.identified, j.mentioned) == (False, False, False)
        path, auth, body = _FakeJudge.seen[0]
        assert path == "/v1/chat/completions" and auth == "Bearer k" and body["model"] == "fake"
        assert "'ocean'" in body["messages"][0]["content"]
    finally:
        server.shutdown()
    with pytest.raises(sl.SteerlabError, match="did not answer"):
        OpenAIJudge(f"http://127.0.0.1:{server.server_port}/v1", model="x", timeout=1)("a", None)
    with pytest.raises(sl.SteerlabError, match="http"):
        OpenAIJudge("localhost:1", model="x")
