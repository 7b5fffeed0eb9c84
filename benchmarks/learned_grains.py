"""GrAInS vs mean difference on the same sentiment pairs, same strength grid, VADER as outside scorer (issue 16, item 2).

Both directions are unit-normalised and applied the GrAInS way (``10 * alpha * v̂`` at every position of one
layer, each token rescaled to its old norm). Held-out prompts: bundled neutral prompts (no sentiment pair is
a prompt). Reported: mean VADER compound of the greedy continuations, and perplexity of the bundled reference
text under each recipe.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/learned_grains.py --out benchmarks/results/learned_grains.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time

import torch

import steerlab as sl
from steerlab.evaluate.behaviour import vader_compound
from steerlab.evaluate.utility import Perplexity


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/learned_grains.json")
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--alphas", default="0.5,1,2,4")
    ap.add_argument("--n-prompts", type=int, default=24)
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    model = sl.load("smollm2")
    data = sl.data.load("sentiment")
    order = list(range(len(data)))
    random.Random(0).shuffle(order)
    train = order[:args.pairs]
    pos = [data.positive[i] for i in train]
    neg = [data.negative[i] for i in train]
    prompts = sl.data.neutral_prompts()[:args.n_prompts]
    t1 = time.time()
    g = sl.directions.grains(model, pos, neg, layers=[args.layer])
    t_grains = time.time() - t1
    md = sl.directions.mean_diff(model, sl.data.ContrastiveSet(positive=pos, negative=neg), layers=[args.layer])
    unit = {"grains": g[args.layer] / g[args.layer].norm(), "mean_diff": md[args.layer] / md[args.layer].norm()}
    cosine = float(unit["grains"].float() @ unit["mean_diff"].float())
    norm = float(model.capture(prompts, sites=f"layers.{args.layer}.resid_post", positions="mean", chat=True,
                               progress=False).tensor(f"layers.{args.layer}.resid_post").norm(dim=-1).mean())
    recipes: dict[str, sl.Steering | None] = {"base": None}
    for alpha in [float(a) for a in args.alphas.split(",")]:
        for name, v in unit.items():
            recipes[f"{name} a={alpha:g}"] = sl.recipes.grains(v, args.layer, alpha)
    names = list(recipes)
    rows = [recipes[n] for n in names for _ in prompts]
    texts = [p for _ in names for p in prompts]
    out = []
    for begin in range(0, len(texts), 24):
        out += model.generate(texts[begin:begin + 24], steering=rows[begin:begin + 24],
                              max_new_tokens=args.tokens).texts
    ppl = list(Perplexity().score(model, [recipes[n] for n in names])["perplexity"])
    table = []
    for i, name in enumerate(names):
        scores = vader_compound(out[i * len(prompts):(i + 1) * len(prompts)])
        sd = statistics.stdev(scores)
        table.append({"recipe": name, "vader_mean": statistics.mean(scores),
                      "vader_ci95": 1.96 * sd / math.sqrt(len(scores)),
                      "positive_share": sum(s > 0.05 for s in scores) / len(scores), "perplexity": ppl[i],
                      "example": out[i * len(prompts)][:160]})
    doc = {"model": "smollm2", "layer": args.layer, "n_pairs": args.pairs, "n_prompts": len(prompts),
           "max_new_tokens": args.tokens, "cosine_grains_mean_diff": cosine, "mean_token_norm_at_layer": norm,
           "grains_seconds": t_grains, "table": table, "seconds": time.time() - t0,
           "note": "loaded 2-core machine, 1 thread; directions unit-normalised; 10*alpha*v added, norm kept"}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    for row in table:
        print(f"{row['recipe']:<18} vader {row['vader_mean']:+.3f} ±{row['vader_ci95']:.3f}  "
              f"pos {row['positive_share']:.2f}  ppl {row['perplexity']:.2f}")
    print(json.dumps({k: doc[k] for k in ("cosine_grains_mean_diff", "mean_token_norm_at_layer", "grains_seconds",
                                          "seconds")}))


if __name__ == "__main__":
    main()
