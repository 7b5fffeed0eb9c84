"""Weighted-controller steering vs plain Add and CAST at matched strength, on SmolLM2 (issue 16, item 1).

Train: 48 HarmBench + 48 bundled harmful prompts vs 96 harmless (``refusal_prompts`` train split).
Held out: the test split (HarmBench harmful, bundled harmless), disjoint from training.
Matched strength: Add and CAST add ``alpha * r̂_l`` at the same layers and positions, with ``alpha`` the
mean ``s * scale * w_l`` the controller applies on the harmful training prompts.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/learned_weighted.py --out benchmarks/results/learned_weighted.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import steerlab as sl
from steerlab.evaluate.refusal import refusal_eval, refusal_prompts
from steerlab.interventions import Add, Conditional, Steering
from steerlab.recipes import controller_features, find_condition, refusal_logit_score, train_controller, weighted


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/learned_weighted.json")
    ap.add_argument("--inputs", default="6,7,8,9")
    ap.add_argument("--scales", default="4,16")
    ap.add_argument("--n-test", type=int, default=40)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    model = sl.load("smollm2")
    split = refusal_prompts(n_train=96, n_val=0, n_test=args.n_test, seed=0)
    bundled = list(sl.data.load("refusal").positive)
    harmful_train = split["train"]["harmful"][:48] + bundled[:48]
    harmless_train = split["train"]["harmless"]
    inputs = [int(x) for x in args.inputs.split(",")]
    fit = train_controller(model, harmful_train, harmless_train, input_layers=inputs, epochs=args.epochs)
    pairs = sl.data.ContrastiveSet(positive=harmful_train, negative=harmless_train[:len(harmful_train)])
    direction = sl.directions.mean_diff(model, pairs, layers=fit.layers, chat=True)
    feats = controller_features(model, split["test"]["harmful"] + split["test"]["harmless"], fit.input_layers)
    s_test, _ = fit.scores(feats)
    n = len(split["test"]["harmful"])
    held_acc = float(((s_test > 0).float() == torch.cat([torch.ones(n), torch.zeros(len(s_test) - n)])).float()
                      .mean())
    s_tr, w_tr = fit.scores(controller_features(model, harmful_train, fit.input_layers))
    condition = find_condition(model, pairs, fire="positive", layers=fit.input_layers)
    unit = {layer: direction[layer] / direction[layer].norm() for layer in fit.layers}
    recipes: dict[str, Steering | None] = {"base": None}
    matched = {}
    for scale in [float(x) for x in args.scales.split(",")]:
        alpha = float((s_tr[:, None] * w_tr).mean() * scale)
        matched[scale] = alpha
        recipes[f"weighted x{scale:g}"] = weighted(fit, direction, scale=scale)
        add = Add(unit, alpha=alpha, layers=fit.layers, positions="last")
        recipes[f"add a={alpha:.2f}"] = Steering([add])
        recipes[f"cast a={alpha:.2f}"] = Steering([Conditional(add, condition.vector, layer=condition.layer,
                                                               threshold=condition.threshold,
                                                               comparator=condition.comparator)])
    result = refusal_eval(model, recipes, split["test"]["harmful"], split["test"]["harmless"],
                          score=refusal_logit_score(model.tokenizer), max_new_tokens=args.tokens, progress=False)
    samples = result.samples
    doc = {
        "model": "smollm2", "n_train": {"harmful": len(harmful_train), "harmless": len(harmless_train)},
        "n_test": {"harmful": n, "harmless": len(split["test"]["harmless"])},
        "input_layers": fit.input_layers, "steered_layers": fit.layers, "history": fit.history,
        "controller_heldout_accuracy": held_acc,
        "mean_s_test": {"harmful": float(s_test[:n].mean()), "harmless": float(s_test[n:].mean())},
        "cast_condition": {"layer": condition.layer, "threshold": condition.threshold,
                           "comparator": condition.comparator, "train_f1": condition.f1},
        "matched_alpha": matched, "max_new_tokens": args.tokens,
        "table": json.loads(result.table.to_json(orient="records")),
        "examples": json.loads(samples.groupby(["recipe", "side"]).head(2).to_json(orient="records")),
        "seconds": time.time() - t0, "note": "loaded 2-core machine, 1 thread",
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(result.table.to_string())
    print(json.dumps({k: doc[k] for k in ("controller_heldout_accuracy", "mean_s_test", "cast_condition",
                                          "matched_alpha", "seconds")}, indent=1))


if __name__ == "__main__":
    main()
