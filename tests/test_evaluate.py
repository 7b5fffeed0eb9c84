"""Scorers, teacher-forced steered forwards, sweeps and the frontier, against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import steerlab as sl
from steerlab.evaluate import (
    Generations,
    answer_of,
    arithmetic_items,
    continuation_logprobs,
    distinct_n,
    first_integer,
    frontier,
    generate_grid,
    pareto_mask,
    repetition_rate,
)


# --- pure metrics -----------------------------------------------------------------------------
def test_distinct_n_pools_ngrams_over_texts():
    texts = [[1, 2, 3, 1, 2], [1, 2]]
    # bigrams: (1,2) (2,3) (3,1) (1,2) | (1,2): 5 in all, 3 distinct
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)
    assert math.isnan(distinct_n([[1]], 2))


def test_repetition_rate_counts_repeats_of_earlier_ngrams():
    assert repetition_rate([1, 2, 3, 1, 2, 3, 1], n=3) == pytest.approx(2 / 5)   # (1,2,3),(2,3,1) repeat
    assert repetition_rate([1, 2, 3, 4], n=3) == 0.0
    assert math.isnan(repetition_rate([1, 2], n=3))


def test_fluency_scorer_per_recipe():
    gens = Generations(["p"], [["x"], ["y"]], [[[1, 1, 1, 1]], [[1, 2, 3]]])
    out = sl.evaluate.Fluency().score(None, [None, None], gens)
    assert out["repetition"] == [pytest.approx(0.5), 0.0]
    assert out["distinct_1"] == [0.25, 1.0]


def test_sentiment_and_refusal_substring_scorers():
    gens = Generations(["p", "q"], [["I love this, it is wonderful!", "What a great day."],
                                    ["I hate this, it is awful.", "I'm sorry, but I cannot help with that."]])
    out = sl.evaluate.Sentiment().score(None, [None, None], gens)
    s = out["sentiment"]
    assert s[0] > 0.5 and s[1] < -0.3
    by_hand = sl.evaluate.vader_compound(gens.texts[1])
    assert s[1] == pytest.approx(sum(by_hand) / 2)
    assert out["sentiment_se"][1] == pytest.approx(abs(by_hand[0] - by_hand[1]) / 2)   # sd/sqrt(2) for n = 2
    r = sl.evaluate.RefusalSubstring().score(None, [None, None], gens)["refusal_rate"]
    assert r == [0.0, 0.5]
    assert sl.evaluate.is_refusal("I can’t do that") and not sl.evaluate.is_refusal("Sure, here it is")


def test_arithmetic_items_and_answer_parsing():
    items = arithmetic_items(30, seed=3)
    for item in items:
        a, op, b = item.expression.split(" ")
        assert item.answer == (int(a) + int(b) if op == "+" else int(a) - int(b)) and item.answer >= 0
        assert item.expression in item.question
    assert arithmetic_items(5, seed=3) == items[:5]
    item = sl.evaluate.Item("What is 14 + 15?", 29, "14 + 15")
    assert answer_of("14 + 15 = 29", item) == 29
    assert answer_of("The answer is 29.", item) == 29
    assert answer_of("14+15 is 28", item) == 28
    assert answer_of("no idea", item) is None
    assert first_integer("about 1,234 apples") == 1234


def test_task_accuracy_counts_correct_answers():
    items = [sl.evaluate.Item("q1", 3, "1 + 2"), sl.evaluate.Item("q2", 5, "2 + 3")]
    scorer = sl.evaluate.TaskAccuracy(items)
    assert scorer._accuracy(["1 + 2 = 3", "it is 4"]) == 0.5


# --- the frontier -----------------------------------------------------------------------------
def test_pareto_mask_by_hand():
    gain = [1.0, 2.0, 2.0, 0.5, 3.0, 3.0]
    cost = [1.0, 1.0, 3.0, 0.5, 5.0, 5.0]
    # 0 is beaten by 1 (more gain, same cost); 2 by 1; 3 is cheapest; 4 and 5 are identical and best on gain
    assert pareto_mask(gain, cost).tolist() == [False, True, False, True, True, True]


def test_frontier_is_per_method_and_sorted_by_cost():
    table = pd.DataFrame({"method": ["a", "a", "a", "b", "b"], "strength": [0, 1, 2, 0, 1],
                          "sentiment": [0.1, 0.5, 0.4, 0.1, np.nan], "perplexity": [10, 12, 20, 10, 11]})
    front = frontier(table, "sentiment", "perplexity")
    assert front[["method", "strength"]].values.tolist() == [["a", 0], ["a", 1], ["b", 0]]
    lower = frontier(table, "sentiment", "perplexity", higher_behaviour=False)
    assert lower[lower["method"] == "a"]["strength"].tolist() == [0]
    with pytest.raises(sl.SteerlabError, match="column"):
        frontier(table, "nope", "perplexity")


# --- teacher-forced steered forwards ----------------------------------------------------------
def _manual_logprobs(model, prompt, cont, vector=None, layer=0, from_position=0):
    """Reference: the plain HF forward on prompt+continuation, with an optional hand-written hook
    adding ``vector`` to block ``layer``'s output at positions >= ``from_position``."""
    ids = torch.tensor([prompt + cont])
    handle = None
    if vector is not None:
        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            h = h.clone()
            h[:, from_position:] += vector
            return (h, *output[1:]) if isinstance(output, tuple) else h
        handle = model.hf_model.model.layers[layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = model.hf_model(input_ids=ids).logits[0].float()
    finally:
        if handle is not None:
            handle.remove()
    return torch.log_softmax(logits, -1)[len(prompt) - 1:len(prompt) + len(cont) - 1]


@pytest.mark.parametrize("positions, start", [("all", 0), ("last", 3)])
def test_continuation_logprobs_match_a_manual_forward(tiny_llama, positions, start):
    torch.manual_seed(0)
    v = torch.randn(tiny_llama.d_model)
    prompts, conts = [[5, 6, 7, 8], [9, 10]], [[11, 12, 13], [14]]
    steering = sl.Steering([sl.Add(v, 1.0, layers=[1], positions=positions)])
    got = dict(continuation_logprobs(tiny_llama, prompts, conts, [steering, None], batch_size=2))
    ref0 = _manual_logprobs(tiny_llama, prompts[0], conts[0], v, layer=1, from_position=start)
    ref1 = _manual_logprobs(tiny_llama, prompts[1], conts[1])
    assert torch.allclose(got[0], ref0, atol=1e-4)
    assert torch.allclose(got[1], ref1, atol=1e-4)


def test_perplexity_and_kl_by_hand(tiny_llama):
    text = "bread is made of flour"
    ppl = sl.evaluate.Perplexity(text=text, prompt="hi", max_tokens=None)
    v = torch.randn(tiny_llama.d_model)
    recipe = sl.Steering([sl.Add(v, 2.0, layers=[0], positions="all")])
    values = ppl.score(tiny_llama, [None, recipe])["perplexity"]
    prompt = tiny_llama.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}],
                                                      add_generation_prompt=True, tokenize=False)
    p_ids = tiny_llama.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    t_ids = tiny_llama.tokenizer(text, add_special_tokens=False)["input_ids"]
    for value, vec in ((values[0], None), (values[1], 2.0 * v)):
        lp = _manual_logprobs(tiny_llama, p_ids, t_ids, vec, layer=0)
        nll = -lp.gather(1, torch.tensor(t_ids)[:, None]).mean()
        assert value == pytest.approx(float(nll.exp()), rel=1e-4)
    kl = sl.evaluate.KL(["hello", "what now"], continuation_tokens=4)
    out = kl.score(tiny_llama, [None, recipe, sl.Steering([sl.Add(v, 0.0, layers=[0])])])["kl"]
    assert out[0] == 0.0 and out[1] > 1e-3 and out[2] == pytest.approx(0.0, abs=1e-6)


# --- sweeps -----------------------------------------------------------------------------------
class CountingModel:
    """Wraps a model and records each generate call's steering list (a spy, not a mock)."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def generate(self, prompts, steering=None, **kwargs):
        self.calls.append(list(steering) if isinstance(steering, list) else steering)
        return self.model.generate(prompts, steering=steering, **kwargs)


def _fitted():
    torch.manual_seed(0)
    v = torch.randn(64) * 3
    return sl.recipes.Fitted("add", "alpha", (0.0, 1.0, 2.0),
                             lambda a: sl.Steering([sl.Add(v, a, layers=[1])]))


def test_sweep_generates_every_strength_in_one_batch_with_per_row_recipes(tiny_llama):
    spy = CountingModel(tiny_llama)
    prompts = ["hi", "tell me"]
    cache = {}
    table = sl.evaluate.sweep(spy, _fitted(), prompts=prompts, scorers=[sl.evaluate.Fluency()],
                              max_new_tokens=4, cache=cache)
    assert len(spy.calls) == 1
    steering = spy.calls[0]
    assert len(steering) == 6                                   # 2 steered strengths + baseline, x 2 prompts
    assert steering[0] is steering[1] and steering[2] is steering[3] and steering[0] is not steering[2]
    assert steering[4] is None and steering[5] is None
    assert table["strength"].tolist() == [0.0, 1.0, 2.0] and (table["alpha"] == table["strength"]).all()
    assert {"repetition", "distinct_1", "distinct_2", "method", "param"} <= set(table.columns)
    assert len(table.attrs["samples"]) == 6
    # a second method reuses the cached baseline: no unsteered rows are generated again
    sl.evaluate.sweep(spy, _fitted(), prompts=prompts, scorers=[sl.evaluate.Fluency()], max_new_tokens=4,
                      cache=cache)
    assert len(spy.calls) == 2 and None not in spy.calls[1]


def test_batched_rows_equal_separate_generation(tiny_llama):
    fitted = _fitted()
    recipes = [fitted.recipe(s) for s in fitted.strengths]
    gens = generate_grid(tiny_llama, recipes, ["hi", "tell me"], max_new_tokens=5)
    for recipe, texts in zip(recipes, gens.texts):
        alone = tiny_llama.generate(["hi", "tell me"], steering=recipe, max_new_tokens=5).texts
        assert texts == alone


def test_sweep_rejects_empty_strengths(tiny_llama):
    with pytest.raises(sl.SteerlabError, match="empty"):
        sl.evaluate.sweep(tiny_llama, _fitted(), strengths=[], prompts=["hi"], scorers=[])


def test_refusal_score_scorer_by_hand(tiny_llama, tokenizer):
    score = sl.recipes.LogitScore("r", sl.recipes.token_ids(tokenizer, ["I"], spaced=False), None, chat=True)
    scorer = sl.evaluate.RefusalScore(score)
    v = torch.randn(tiny_llama.d_model)
    recipe = sl.Steering([sl.Add(v, 3.0, layers=[1])])
    prompts = ["hello", "do it"]
    out = scorer.score(tiny_llama, [None, recipe], Generations(prompts, [["", ""], ["", ""]]))["refusal_score"]
    for value, steering in zip(out, (None, recipe)):
        logits = tiny_llama.logits(prompts, steering=steering, chat=True)
        p = torch.softmax(logits, -1)[:, score.positive_ids].sum(-1)
        assert value == pytest.approx(float(torch.log(p / (1 - p)).mean()), abs=1e-4)


def test_probe_scorer_reads_generations_with_the_unsteered_model(tiny_llama):
    pairs = sl.data.ContrastiveSet([f"good {c}" for c in "abcdef"], [f"bad {c}!" for c in "abcdef"])
    direction = sl.directions.probe(tiny_llama, pairs, layers=[1], test=0.0)
    texts = [["good day", "bad day!"], ["", "hmm"]]
    out = sl.evaluate.ProbeScore(direction, 1).score(tiny_llama, [None, None], Generations(["p", "q"], texts))
    acts = tiny_llama.capture(["good day", "bad day!", "hmm"], sites="layers.1.resid_post")["layers.1.resid_post"]
    w, b = direction[1], direction.meta["intercept"][1]
    logits = acts @ w + b
    assert out["probe"][0] == pytest.approx(float(logits[:2].mean()), abs=1e-4)
    assert out["probe"][1] == pytest.approx(float(logits[2]), abs=1e-4)      # the empty generation is skipped


def test_length_scorer():
    gens = Generations(["p"], [["a", "b"]], [[[1, 2, 3], [4]]])
    assert sl.evaluate.Length().score(None, [None], gens)["length"] == [2.0]
