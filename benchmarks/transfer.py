"""Cross-model transfer on the embedded pair: SmolLM2-135M-Instruct <-> Gemma-3-270M base (METHODS.md §9).

For each direction of transfer (source -> target):
1. fit the rank-r map on unlabeled shared texts (bundled formality + verbosity sides, Do-Not-Answer questions),
   source layer at mid depth, target layer and rank chosen by held-out R² among the target layers of similar
   depth; report R² again on texts disjoint from the fit (more Do-Not-Answer questions);
2. sentiment (bundled pairs, split train/test) and refusal (HarmBench vs bundled harmless, train/val/test)
   mean-difference directions in both models (train part); the transferred direction is A v_source;
   its cosine with the target's own direction at the chosen layer, against two controls (random source
   vectors mapped; the other concept's transferred direction), and how well each separates the target's
   held-out pairs (share of pairs whose positive projects higher);
3. steering the target at that layer with the native and the transferred direction scaled to the same norm
   (a share of the layer's mean token norm), greedy, on held-out prompts: VADER compound (+ vs - steering)
   for sentiment, the refusal substring rate on harmless prompts for refusal.

Run (loaded 2-core machine, one thread):
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/transfer.py --out benchmarks/results/transfer.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch

import steerlab as sl
from steerlab.directions import transfer
from steerlab.evaluate.behaviour import is_refusal, vader_compound


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def wilson(k: int, n: int) -> list[float]:
    if n == 0:
        return [0.0, 1.0]
    p, z = k / n, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 3), round(centre + half, 3)]


def mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, sd / math.sqrt(n)


def token_norm(model: sl.Model, texts: list[str], layer: int) -> float:
    """Mean norm of the layer's activations over every token but the first (an attention sink)."""
    acts = model.capture(texts, layers=[layer], positions="all")[f"layers.{layer}.resid_post"]
    return float(torch.cat([a[1:] for a in acts]).norm(dim=-1).mean())


def separation(direction: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Share of (positive, negative) pairs whose positive projects higher (1 = perfect, 0.5 = chance)."""
    p, n = pos @ direction, neg @ direction
    return float((p[:, None] > n[None, :]).double().mean())


def generate(model: sl.Model, prompts: list[str], recipes: dict[str, sl.Steering | None], chat: bool,
             max_new_tokens: int, batch: int = 48) -> dict[str, list[str]]:
    rows = [(name, p) for name in recipes for p in prompts]
    texts: list[str] = []
    for begin in range(0, len(rows), batch):
        part = rows[begin:begin + batch]
        out = model.generate([p for _, p in part], steering=[recipes[name] for name, _ in part],
                             max_new_tokens=max_new_tokens, chat=chat)
        texts.extend(out.texts)
    return {name: texts[i * len(prompts):(i + 1) * len(prompts)] for i, name in enumerate(recipes)}


def run_pair(source: sl.Model, target: sl.Model, names: tuple[str, str], args: argparse.Namespace,
             data: dict, log) -> dict:
    src_name, tgt_name = names
    ls = source.n_layers // 2 - 1
    t0 = time.perf_counter()
    m = transfer.fit(source, target, data["fit"], source_layers=[ls], per_text=args.per_text, seed=0)
    lt = m.target_layer
    log(f"{src_name}->{tgt_name}: {m} ({time.perf_counter() - t0:.0f} s)")
    by_layer = m.table().groupby("target_layer")["r2"].max().round(4).to_dict()
    # R² on texts the map never saw (neither fit nor selection)
    xs, ys, _ = transfer.paired_activations(source, target, data["r2"], [ls], [lt], per_text=args.per_text)
    r2_disjoint = m.r2_on(xs[ls], ys[lt])
    # per-dimension spread of the target's activations: cosines in standardized coordinates are not
    # dominated by the few outsized ("massive activation") dimensions
    sigma = ys[lt].double().std(0).clamp_min(1e-6)
    result: dict = {"source": src_name, "target": tgt_name, "source_layer": ls, "target_layer": lt,
                    "rank": m.rank, "r2_selection": round(m.r2, 4), "r2_disjoint_texts": round(r2_disjoint, 4),
                    "n_fit_samples": m.meta["n_samples"], "n_fit_texts": m.meta["n_texts"],
                    "n_r2_samples": int(xs[ls].shape[0]), "n_r2_texts": len(data["r2"]),
                    "best_r2_by_target_layer": {int(k): v for k, v in by_layer.items()},
                    "r2_by_rank_at_chosen_layers": {int(r["rank"]): round(r["r2"], 4) for r in m.scores
                                                    if r["target_layer"] == lt},
                    "concepts": {}}
    g = torch.Generator().manual_seed(0)
    transferred: dict[str, torch.Tensor] = {}
    native: dict[str, torch.Tensor] = {}
    for concept in ("sentiment", "refusal"):
        train, test = data[concept]["train"], data[concept]["test"]
        a_src = sl.directions.capture_pairs(source, train, layers=[ls])
        a_tgt = sl.directions.capture_pairs(target, train, layers=[lt])
        d_src = sl.directions.mean_diff(None, None, acts=a_src)
        d_tgt = sl.directions.mean_diff(None, None, acts=a_tgt)
        transferred[concept] = m.map(d_src, target=target)[lt]
        native[concept] = d_tgt[lt]
        held = sl.directions.capture_pairs(target, test, layers=[lt])
        pos, neg = held.positive[:, 0].double(), held.negative[:, 0].double()
        randoms = [m.map_vector(torch.randn(source.d_model, generator=g)) for _ in range(50)]
        random_cos = [abs(cos(r, native[concept])) for r in randoms]
        random_std = [abs(cos(r / sigma, native[concept] / sigma)) for r in randoms]
        result["concepts"][concept] = {
            "n_train_pairs": [len(train.positive), len(train.negative)],
            "n_test_pairs": [len(test.positive), len(test.negative)],
            "cos_transferred_vs_native": round(cos(transferred[concept], native[concept]), 4),
            "control_mean_abs_cos_random_source_vectors_mapped": round(sum(random_cos) / len(random_cos), 4),
            "cos_standardized": round(cos(transferred[concept] / sigma, native[concept] / sigma), 4),
            "control_standardized_random": round(sum(random_std) / len(random_std), 4),
            "norm_native": round(float(native[concept].norm()), 3),
            "norm_transferred": round(float(transferred[concept].norm()), 3),
            "heldout_separation_native": round(separation(native[concept].double(), pos, neg), 4),
            "heldout_separation_transferred": round(separation(transferred[concept].double(), pos, neg), 4),
        }
        log(f"  {concept}: {result['concepts'][concept]}")
    for concept, other in (("sentiment", "refusal"), ("refusal", "sentiment")):
        result["concepts"][concept]["control_cos_other_concept_transferred_vs_native"] = round(
            cos(transferred[other], native[concept]), 4)
    if args.no_steering:
        return result
    # steering at matched norm
    chat = getattr(target.tokenizer, "chat_template", None) is not None  # instruct: its template; base: raw text
    norm = token_norm(target, data["sentiment_prompts"], lt)
    result["steering"] = {"layer": lt, "chat_template": chat, "mean_token_norm": round(norm, 2),
                          "max_new_tokens": args.max_new_tokens, "scales": args.scales, "greedy": True}

    def add(vec: torch.Tensor, size: float) -> sl.Steering:
        return sl.Steering([sl.Add(vec / vec.norm() * size, layers=[lt])])

    recipes: dict[str, sl.Steering | None] = {"none": None}
    for s in args.scales:
        for kind, vecs in (("native", native), ("transferred", transferred)):
            recipes[f"{kind}+{s}"] = add(vecs["sentiment"], s * norm)
            recipes[f"{kind}-{s}"] = add(-vecs["sentiment"], s * norm)
    t0 = time.perf_counter()
    outs = generate(target, data["sentiment_prompts"], recipes, chat, args.max_new_tokens)
    scores = {k: vader_compound(v) for k, v in outs.items()}
    sent: dict = {"n_prompts": len(data["sentiment_prompts"]),
                  "vader_mean": {k: round(sum(v) / len(v), 4) for k, v in scores.items()},
                  "samples": {k: v[:2] for k, v in outs.items()}}
    for s in args.scales:
        for kind in ("native", "transferred"):
            m_, se = mean_se([p - q for p, q in zip(scores[f"{kind}+{s}"], scores[f"{kind}-{s}"])])
            sent[f"shift_{kind}_{s}"] = {"mean": round(m_, 4), "ci95": [round(m_ - 1.96 * se, 4),
                                                                         round(m_ + 1.96 * se, 4)]}
        nat, tra = sent[f"shift_native_{s}"]["mean"], sent[f"shift_transferred_{s}"]["mean"]
        sent[f"ratio_transferred_over_native_{s}"] = round(tra / nat, 3) if abs(nat) > 1e-9 else None
    result["steering"]["sentiment"] = sent
    log(f"  sentiment steering ({time.perf_counter() - t0:.0f} s): "
        f"{ {k: v for k, v in sent.items() if k.startswith(('shift', 'ratio'))} }")
    norm_r = token_norm(target, data["refusal_prompts"], lt)
    recipes = {"none": None}
    for s in args.scales:
        recipes[f"native+{s}"] = add(native["refusal"], s * norm_r)
        recipes[f"transferred+{s}"] = add(transferred["refusal"], s * norm_r)
    t0 = time.perf_counter()
    outs = generate(target, data["refusal_prompts"], recipes, chat, args.max_new_tokens)
    n = len(data["refusal_prompts"])
    refusals = {k: sum(is_refusal(t) for t in v) for k, v in outs.items()}
    result["steering"]["refusal"] = {
        "n_harmless_prompts": n, "mean_token_norm": round(norm_r, 2),
        "refusal_rate": {k: round(c / n, 4) for k, c in refusals.items()},
        "refusal_rate_ci95": {k: wilson(c, n) for k, c in refusals.items()},
        "samples": {k: v[:2] for k, v in outs.items()}}
    log(f"  refusal steering ({time.perf_counter() - t0:.0f} s): {result['steering']['refusal']['refusal_rate']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/transfer.json"))
    parser.add_argument("--n-fit", type=int, default=600, help="texts the map is fitted and selected on")
    parser.add_argument("--n-r2", type=int, default=150, help="disjoint texts for the final R²")
    parser.add_argument("--per-text", type=int, default=16, help="aligned tokens kept per text")
    parser.add_argument("--n-prompts", type=int, default=24, help="held-out prompts per steering condition")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.125, 0.25, 0.5],
                        help="steering norm as a share of the layer's mean token norm")
    parser.add_argument("--pairs", default="smollm2:gemma3-270m,gemma3-270m:smollm2")
    parser.add_argument("--strip-punct", action="store_true",
                        help="control: drop the final . ? ! of the refusal prompts (HarmBench's end in a word, "
                             "the harmless ones in punctuation, so the last token alone tells them apart)")
    parser.add_argument("--no-steering", action="store_true", help="only the map, cosines and separations")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {msg}", flush=True)

    unlabeled = list(sl.data.load("formality").positive) + list(sl.data.load("formality").negative) + list(
        sl.data.load("verbosity").positive) + list(sl.data.load("verbosity").negative)
    dna = list(dict.fromkeys(sl.data.prompts("donotanswer")))
    random.Random(0).shuffle(dna)
    n_dna = max(0, args.n_fit - len(unlabeled))
    fit_texts = unlabeled + dna[:n_dna]
    random.Random(1).shuffle(fit_texts)
    fit_texts = fit_texts[:args.n_fit]
    r2_texts = dna[n_dna:n_dna + args.n_r2]
    sentiment = sl.data.load("sentiment")
    idx = list(range(len(sentiment.positive)))
    random.Random(0).shuffle(idx)
    cut = int(len(idx) * 2 / 3)
    sets = {}
    for name, part in (("train", idx[:cut]), ("test", idx[cut:])):
        sets[name] = sl.data.ContrastiveSet(positive=[sentiment.positive[i] for i in part],
                                            negative=[sentiment.negative[i] for i in part])
    splits = sl.evaluate.refusal_prompts(64, 24, args.n_prompts, seed=0)
    if args.strip_punct:
        splits = {k: {side: [t.rstrip().rstrip(".?!") for t in texts] for side, texts in v.items()}
                  for k, v in splits.items()}
    data = {
        "fit": fit_texts, "r2": r2_texts,
        "sentiment": sets,
        "refusal": {"train": sl.data.ContrastiveSet(positive=splits["train"]["harmful"],
                                                    negative=splits["train"]["harmless"]),
                    "test": sl.data.ContrastiveSet(positive=splits["val"]["harmful"],
                                                   negative=splits["val"]["harmless"])},
        "sentiment_prompts": sl.data.prompts("neutral")[:args.n_prompts],
        "refusal_prompts": splits["test"]["harmless"],
    }
    overlap = set(fit_texts) & (set(r2_texts) | set(data["sentiment_prompts"]) | set(data["refusal_prompts"]))
    assert not overlap, overlap
    models = {name: sl.load(name) for name in {n for p in args.pairs.split(",") for n in p.split(":")}}
    results = {"what": __doc__.split("\n\n")[0], "machine": "loaded shared 2-core CPU, 1 thread, float32",
               "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "models": {k: {"n_layers": v.n_layers, "d_model": v.d_model} for k, v in models.items()},
               "pairs": []}
    for pair in args.pairs.split(","):
        src, tgt = pair.split(":")
        results["pairs"].append(run_pair(models[src], models[tgt], (src, tgt), args, data, log))
        results["seconds"] = round(time.perf_counter() - started, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
