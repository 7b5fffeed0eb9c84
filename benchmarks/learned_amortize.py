"""Amortized (CASAL-style) checkpoints vs hook steering, for recipes bake refuses (issue 16, item 3).

Recipes at one layer (default 15 of SmolLM2's 30), from the bundled sentiment pairs' mean difference:
a norm-matched addition and a rotation toward the direction (both not bakeable). Training texts: 24
bundled neutral prompts with the steered model's 16-token replies; held out: 16 other neutral prompts.
Reported per recipe: VADER compound of greedy replies (hooks vs the amortized checkpoint with no hooks vs the
unsteered model), perplexity of the bundled reference text, and the training-token fit error.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/learned_amortize.py --out benchmarks/results/learned_amortize.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

import steerlab as sl
from steerlab.evaluate.behaviour import vader_compound
from steerlab.evaluate.utility import Perplexity
from steerlab.models import Model


def vader(model: Model, prompts: list[str], steering: sl.Steering | None, tokens: int) -> dict:
    texts = model.generate(prompts, steering=steering, max_new_tokens=tokens).texts
    scores = vader_compound(texts)
    return {"vader_mean": statistics.mean(scores),
            "vader_ci95": 1.96 * statistics.stdev(scores) / math.sqrt(len(scores)),
            "positive_share": sum(s > 0.05 for s in scores) / len(scores), "example": texts[0][:160]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/learned_amortize.json")
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--n-train", type=int, default=24)
    ap.add_argument("--n-test", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--norm-frac", type=float, default=0.25, help="norm-matched Add alpha, share of median token norm")
    ap.add_argument("--angle", type=float, default=20.0)
    ap.add_argument("--ridge", type=float, default=1e-4)
    ap.add_argument("--recipes", default="add,rotate", help="which recipes to run: add, rotate or both")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    model = sl.load("smollm2")
    layer = args.layer
    prompts = sl.data.neutral_prompts()
    train, test = prompts[:args.n_train], prompts[args.n_train:args.n_train + args.n_test]
    md = sl.directions.mean_diff(model, sl.data.load("sentiment"), layers=[layer])
    v = md[layer] / md[layer].norm()
    acts = model.capture(train, sites=f"layers.{layer}.resid_post", positions="all", chat=True, progress=False)
    norm = float(torch.cat(list(acts[f"layers.{layer}.resid_post"])).norm(dim=-1).median())  # not the sink token's
    recipes = {
        f"add_norm_match a={args.norm_frac:g}*|h|": sl.Steering(
            [sl.Add(v, alpha=args.norm_frac * norm, layers=[layer], norm_match=True)]),
        f"rotate {args.angle:g} deg": sl.Steering([sl.Rotate(v, angle=args.angle, layers=[layer])]),
    }
    wanted = args.recipes.split(",")
    recipes = {k: v for k, v in recipes.items() if k.split("_")[0].split(" ")[0] in wanted}
    base = {**vader(model, test, None, args.tokens), "perplexity": Perplexity().score(model, [None])["perplexity"][0]}
    rows = []
    for name, recipe in recipes.items():
        try:
            sl.edit.bake(model, recipe)
            bakeable = "yes"
        except sl.SteerlabError as e:
            bakeable = f"no: {str(e)[:100]}"
        texts = sl.edit.with_replies(model, recipe, train, max_new_tokens=16)
        out = sl.edit.amortize(model, recipe, texts, layer=layer, rank=args.rank, ridge=args.ridge)
        amortized = Model(out.model, model.tokenizer, name="smollm2-amortized")
        hook = {**vader(model, test, recipe, args.tokens),
                "perplexity": Perplexity().score(model, [recipe])["perplexity"][0]}
        ckpt = {**vader(amortized, test, None, args.tokens),
                "perplexity": Perplexity().score(amortized, [None])["perplexity"][0]}
        rows.append({"recipe": name, "bake": bakeable, "fit": out.fit, "hook": hook, "amortized": ckpt})
        print(name, json.dumps({"hook": hook["vader_mean"], "amortized": ckpt["vader_mean"],
                                "ppl": [hook["perplexity"], ckpt["perplexity"]], "fit": out.fit}))
    doc = {"model": "smollm2", "layer": layer, "rank": args.rank, "ridge": args.ridge, "n_train_prompts": len(train),
           "n_test_prompts": len(test), "max_new_tokens": args.tokens, "median_token_norm_at_layer": norm,
           "unsteered": base, "recipes": rows, "seconds": time.time() - t0,
           "note": "loaded 2-core machine, 1 thread; held-out prompts disjoint from training prompts"}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    print("unsteered", json.dumps(base))


if __name__ == "__main__":
    main()
