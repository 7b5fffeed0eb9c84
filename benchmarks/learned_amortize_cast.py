"""Amortizing a Conditional (CAST) recipe into a plain checkpoint, on SmolLM2 (issue 16, item 3).

The recipe: when the prompt's condition (harmful vs harmless, searched at layers 4..L on training prompts)
fires, add ``alpha * r`` at every position of layer L (r: raw mean difference harmful - harmless, chat
template, last token). ``alpha`` is the smallest of 2, 4, 8 that raises the harmful training prompts' refusal
log-odds by 2 nats (chosen on training prompts only). The amortized checkpoint is trained on 32 harmful +
32 harmless training prompts with the steered model's 16-token replies; held out: the test split.
Measured: refusal log-odds at the last prompt token (``refusal_logit_score``) and the substring refusal rate
of 16-token greedy replies, on held-out harmful and harmless prompts, for the unsteered model, hooks and the
checkpoint; perplexity of the bundled reference text.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/learned_amortize_cast.py \
        --out benchmarks/results/learned_amortize_cast.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import steerlab as sl
from steerlab.evaluate.behaviour import is_refusal
from steerlab.evaluate.refusal import refusal_prompts
from steerlab.evaluate.utility import Perplexity
from steerlab.interventions import Add, Conditional, Steering
from steerlab.models import Model
from steerlab.recipes import find_condition, refusal_logit_score


def measure(model: Model, steering: Steering | None, harmful: list[str], harmless: list[str], tokens: int) -> dict:
    score = refusal_logit_score(model.tokenizer)
    out: dict = {}
    for side, texts in (("harmful", harmful), ("harmless", harmless)):
        out[f"{side}_score"] = float(score(model.logits(texts, steering=steering, chat=True, progress=False)).mean())
        replies = model.generate(texts, steering=steering, max_new_tokens=tokens).texts
        out[f"{side}_refused"] = sum(is_refusal(r) for r in replies) / len(replies)
        out[f"{side}_example"] = replies[0][:120]
    out["perplexity"] = Perplexity().score(model, [steering])["perplexity"][0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/learned_amortize_cast.json")
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--n-train", type=int, default=32)
    ap.add_argument("--n-test", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    model = sl.load("smollm2")
    layer = args.layer
    split = refusal_prompts(n_train=args.n_train, n_val=0, n_test=args.n_test, seed=1)
    harmful, harmless = split["train"]["harmful"], split["train"]["harmless"]
    pairs = sl.data.ContrastiveSet(positive=harmful, negative=harmless)
    r = sl.directions.mean_diff(model, pairs, layers=[layer], chat=True)[layer]
    condition = find_condition(model, pairs, fire="positive", layers=list(range(4, layer + 1)))
    score = refusal_logit_score(model.tokenizer)
    base_train = float(score(model.logits(harmful, chat=True, progress=False)).mean())
    alpha, lifts = 8.0, {}
    for a in (2.0, 4.0, 8.0):
        lift = float(score(model.logits(harmful, steering=Add(r, alpha=a, layers=[layer]), chat=True,
                                        progress=False)).mean()) - base_train
        lifts[a] = lift
        if lift >= 2.0:
            alpha = a
            break
    recipe = Steering([Conditional(Add(r, alpha=alpha, layers=[layer]), condition.vector, layer=condition.layer,
                                   threshold=condition.threshold, comparator=condition.comparator)])
    try:
        sl.edit.bake(model, recipe)
        bake = "yes"
    except sl.SteerlabError as e:
        bake = f"no: {str(e)[:100]}"
    texts = sl.edit.with_replies(model, recipe, harmful + harmless, max_new_tokens=args.tokens)
    out = sl.edit.amortize(model, recipe, texts, layer=layer, rank=args.rank)
    amortized = Model(out.model, model.tokenizer, name="smollm2-amortized-cast")
    test_h, test_n = split["test"]["harmful"], split["test"]["harmless"]
    rows = {"unsteered": measure(model, None, test_h, test_n, args.tokens),
            "hooks": measure(model, recipe, test_h, test_n, args.tokens),
            "amortized": measure(amortized, None, test_h, test_n, args.tokens)}
    fires = sl.recipes.condition_fires(model, condition, test_h + test_n)
    doc = {"model": "smollm2", "layer": layer, "rank": args.rank, "alpha": alpha, "alpha_lifts": lifts,
           "condition": {"layer": condition.layer, "threshold": condition.threshold,
                         "comparator": condition.comparator, "train_f1": condition.f1,
                         "heldout_fires_harmful": float(fires[:len(test_h)].float().mean()),
                         "heldout_fires_harmless": float(fires[len(test_h):].float().mean())},
           "bake": bake, "fit": out.fit, "n_train": len(texts), "n_test": {"harmful": len(test_h),
                                                                            "harmless": len(test_n)},
           "max_new_tokens": args.tokens, "results": rows, "seconds": time.time() - t0,
           "note": "loaded 2-core machine, 1 thread; held-out prompts disjoint from training (seed-1 split)"}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(json.dumps({k: doc[k] for k in ("alpha", "alpha_lifts", "condition", "bake", "fit")}, indent=1))
    for name, row in rows.items():
        print(name, {k: v for k, v in row.items() if not k.endswith("example")})


if __name__ == "__main__":
    main()
