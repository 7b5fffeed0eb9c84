"""Stage 2b (docs/sae.md): the steering-resistance check again at finer strengths, since in ``sae_steer.py`` the
model already collapsed into repetition at 0.5x the median residual norm. Same feature, prompts and detector;
also counts generations that mention the steered concept (dog words), and keeps every text.

    python benchmarks/sae_esr.py --work /tmp/sae_run
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from sae_steer import ESR_PROMPTS, ESR_TOKENS, NOT_OFF_TOPIC, OFF_TOPIC

FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4)
DOG = re.compile(r"\b(dog|dogs|puppy|puppies|bark\w*|leash|fetch|pet|pets)\b", re.IGNORECASE)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/sae_run")
    ap.add_argument("--feature", type=int, default=1128)  # chosen in sae_steer.py (dog sentences vs others)
    ap.add_argument("--direction", choices=["feature", "mean_diff"], default="feature",
                    help="steer with the SAE feature, or with the unit mean difference of the dog sentences and "
                         "the other sentences (last token, layer 15)")
    ap.add_argument("--fractions", default=",".join(map(str, FRACTIONS)))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import steerlab as sl
    from steerlab.evaluate import detect_recovery

    work = Path(args.work)
    model = sl.load("smollm2")
    sae = sl.sae.load(work / "sae")
    prev = json.loads((Path(__file__).parent / "results" / "sae_steer.json").read_text())
    median_norm = prev["median_residual_norm"]
    if args.direction == "feature":
        direction = sae.feature(args.feature)
    else:
        pairs = sl.data.ContrastiveSet(positive=OFF_TOPIC, negative=NOT_OFF_TOPIC)
        direction = sl.directions.mean_diff(model, pairs, layers=[sae.layer]).unit()
    fractions = [float(f) for f in args.fractions.split(",")]
    out = args.out or str(Path(__file__).parent / "results" / f"sae_esr_{args.direction}.json")
    rows = []
    t0 = time.perf_counter()
    for frac in fractions:
        recipe = None if frac == 0 else sl.Steering([sl.Add(direction, alpha=frac * median_norm)])
        texts = model.generate(ESR_PROMPTS, steering=recipe, max_new_tokens=ESR_TOKENS).texts
        seen = [detect_recovery(p, t) for p, t in zip(ESR_PROMPTS, texts)]
        drifted = [r for r in seen if r.drifted]
        rec = [r for r in drifted if r.recovered]
        row = {"fraction_of_median_norm": frac, "alpha": frac * median_norm, "n": len(texts),
               "mentions_dogs": sum(bool(DOG.search(t)) for t in texts), "drifted": len(drifted),
               "recovered": len(rec), "by_restart": sum(r.how == "restart" for r in rec),
               "by_topic": sum(r.how == "topic" for r in rec),
               "dog_then_back": sum(bool(DOG.search(t)) and r.recovered for t, r in zip(texts, seen)),
               "texts": [{"prompt": p, "text": t, "drifted": r.drifted, "recovered": r.recovered, "how": r.how}
                         for p, t, r in zip(ESR_PROMPTS, texts, seen)]}
        rows.append(row)
        print({k: v for k, v in row.items() if k != "texts"}, flush=True)
    doc = {"steered_with": args.direction, "feature": args.feature if args.direction == "feature" else None, "median_residual_norm": median_norm, "max_new_tokens": ESR_TOKENS,
           "prompts": len(ESR_PROMPTS), "by_strength": rows, "seconds": round(time.perf_counter() - t0, 1),
           "machine": "2 shared CPU cores, loaded by other jobs; 1 torch thread"}
    Path(out).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
