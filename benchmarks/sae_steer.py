"""Stage 2 of the SAE measurement (docs/sae.md): with the layer-15 SAE of stage 1 (``sae_train.py``),

1. how many of the features ranked most "positive" (or "negative") by the bundled sentiment pairs actually move
   VADER sentiment when their decoder direction is added, against randomly drawn live features (the control);
2. endogenous steering resistance: steered off-topic by one feature, how often does a generation come back to
   the question (``sl.evaluate.steering_resistance``), by strength.

Selection data (the sentiment pairs, the hand-written dog sentences) is disjoint from the prompts steered on.

    python benchmarks/sae_steer.py --work /tmp/sae_run
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch

LAYER = 15
N_RANKED, N_RANDOM = 10, 10
FRACTIONS = (0.5, 1.0)  # steering strength as a fraction of the median residual norm at the layer
PROMPTS_SENTIMENT = 12
TOKENS_SENTIMENT = 32
ESR_FRACTIONS = (0.0, 0.5, 1.0, 1.5, 2.0)
ESR_TOKENS = 64
ESR_PROMPTS = [
    "Explain how volcanoes erupt.", "How do bees make honey?", "Describe how a bicycle's gears work.",
    "What causes the seasons on Earth?", "How is bread baked?", "Explain how vaccines train the immune system.",
    "How do airplanes stay in the air?", "Describe the water cycle.", "How does a refrigerator keep food cold?",
    "What is photosynthesis in plants?", "How are rainbows formed?", "Explain how a computer stores files.",
    "How do tides in the ocean work?", "Describe how coffee is grown and roasted.",
    "How does the heart pump blood?", "Explain how glaciers shape mountains.",
]
OFF_TOPIC = [  # the concept the off-topic feature is chosen for (selection only; never a prompt)
    "My dog wagged his tail and barked at the mailman.", "The puppy chewed my shoes again.",
    "Dogs love to fetch sticks in the park.", "She walked her two dogs along the beach.",
    "The golden retriever slept by the fire.", "Our puppy learned to sit and stay.",
    "He bought a new leash and collar for the dog.", "The dog barked all night at the cats.",
]
NOT_OFF_TOPIC = [
    "The meeting was moved to Thursday afternoon.", "Prices rose sharply in the second quarter.",
    "The train leaves the station at noon.", "She painted the kitchen a pale yellow.",
    "The committee approved the new budget.", "Rain is expected later in the week.",
    "He fixed the leaking tap in the bathroom.", "The library opens at nine every morning.",
]


def paired_shift(steered: list[float], base: list[float]) -> dict[str, float]:
    d = [s - b for s, b in zip(steered, base)]
    mean = sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1)) if len(d) > 1 else 0.0
    half = 1.96 * sd / math.sqrt(len(d))
    return {"shift": mean, "ci95": [mean - half, mean + half]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/sae_run")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sae_steer.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    import steerlab as sl
    from steerlab.evaluate import steering_resistance, vader_compound
    from steerlab.sae.features import contrast_features, top_texts

    work = Path(args.work)
    model = sl.load("smollm2")
    sae = sl.sae.load(work / "sae")
    held = sl.DiskActivations(work / "held")
    norms = torch.cat([t[1:] for t in held[sae.site]]).norm(dim=-1)
    median_norm = float(norms.median())
    t0 = time.perf_counter()

    # --- 1. sentiment features vs random features ------------------------------------------------------
    pairs = sl.data.load("sentiment")
    ranking = contrast_features(model, sae, pairs.positive, pairs.negative)
    positive = [f for f, _ in ranking[:N_RANKED]]
    negative = [f for f, _ in ranking[::-1][:N_RANKED]]
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)
    for t in held[sae.site]:
        fired |= (sae.encode(t[1:].float()) > 0).any(0)
    pool = sorted(set(torch.nonzero(fired).flatten().tolist()) - {f for f, _ in ranking[:50]}
                  - {f for f, _ in ranking[-50:]})
    control = random.Random(0).sample(pool, N_RANDOM)
    prompts = sl.data.prompts("neutral")[:PROMPTS_SENTIMENT]
    base_texts = model.generate(prompts, max_new_tokens=TOKENS_SENTIMENT).texts
    base = vader_compound(base_texts)
    groups = {"positive": positive, "negative": negative, "random": control}
    results: dict[str, list[dict]] = {g: [] for g in groups}
    for group, feats in groups.items():
        for f in feats:
            row: dict = {"feature": f, "contrast": dict(ranking).get(f)}
            for frac in FRACTIONS:
                recipe = sl.Steering([sl.Add(sae.feature(f), alpha=frac * median_norm)])
                texts = model.generate(prompts, steering=recipe, max_new_tokens=TOKENS_SENTIMENT).texts
                row[f"x{frac}"] = {**paired_shift(vader_compound(texts), base), "example": texts[0]}
            results[group].append(row)
            print(group, f, {k: round(v["shift"], 3) for k, v in row.items() if k.startswith("x")}, flush=True)
    summary = {}
    for frac in FRACTIONS:
        key = f"x{frac}"
        summary[key] = {
            "positive_features_raising_sentiment": sum(r[key]["ci95"][0] > 0 for r in results["positive"]),
            "negative_features_lowering_sentiment": sum(r[key]["ci95"][1] < 0 for r in results["negative"]),
            "random_features_raising": sum(r[key]["ci95"][0] > 0 for r in results["random"]),
            "random_features_lowering": sum(r[key]["ci95"][1] < 0 for r in results["random"]),
            "mean_shift": {g: sum(r[key]["shift"] for r in results[g]) / len(results[g]) for g in groups},
            "max_abs_random_shift": max(abs(r[key]["shift"]) for r in results["random"]),
        }
    top_pos = top_texts(model, sae, pairs.positive + pairs.negative, positive[:3], k=3, progress=False)
    t_sent = time.perf_counter() - t0

    # --- 2. endogenous steering resistance -----------------------------------------------------------------
    t1 = time.perf_counter()
    dog = contrast_features(model, sae, OFF_TOPIC, NOT_OFF_TOPIC)[0][0]
    direction = sae.feature(dog)
    esr = steering_resistance(
        model, ESR_PROMPTS,
        lambda a: None if a == 0 else sl.Steering([sl.Add(direction, alpha=a)]),
        [frac * median_norm for frac in ESR_FRACTIONS], max_new_tokens=ESR_TOKENS, examples=3)
    for frac, row in zip(ESR_FRACTIONS, esr):
        row["fraction_of_median_norm"] = frac
    t_esr = time.perf_counter() - t1

    doc = {"model": "smollm2", "sae": str(sae), "layer": LAYER, "median_residual_norm": median_norm,
           "strengths": "alpha = fraction x median residual norm at the layer (features are unit directions)",
           "sentiment": {"selection": "bundled sentiment pairs (mean activation positive - negative)",
                         "prompts": f"first {PROMPTS_SENTIMENT} bundled neutral prompts, chat template, greedy, "
                                    f"{TOKENS_SENTIMENT} tokens",
                         "scorer": "VADER compound, paired by prompt vs unsteered; a feature 'steers' when the "
                                   "95% CI of its mean paired shift excludes 0 in the expected direction",
                         "baseline_mean_compound": sum(base) / len(base), "summary": summary,
                         "features": results, "top_texts_of_top_positive": top_pos},
           "esr": {"feature": dog, "feature_top_texts": top_texts(model, sae, OFF_TOPIC + NOT_OFF_TOPIC, [dog], k=3,
                                                                  progress=False)[dog],
                   "prompts": len(ESR_PROMPTS), "max_new_tokens": ESR_TOKENS, "by_strength": esr},
           "seconds": {"sentiment": round(t_sent, 1), "esr": round(t_esr, 1)},
           "machine": "2 shared CPU cores, loaded by other jobs; 1 torch thread"}
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(json.dumps({"summary": summary, "esr": [{k: r[k] for k in ("strength", "n", "drifted", "recovered",
                                                                        "by_restart", "by_topic")} for r in esr]},
                     indent=1))


if __name__ == "__main__":
    main()
