"""Generation speed of a baked checkpoint against hook steering, on the embedded model.

Batch 1, greedy, exactly ``--tokens`` new tokens (``min_new_tokens`` forces the length, so an early
EOS cannot flatter one side). For each recipe the hook-steered model and the baked model run
alternately in one process (order flipped every round), after one warm-up each; the ratio
``hooks time / baked time`` is taken per round, and the median and range over ``--runs`` rounds
are reported, with the unsteered model's time as a reference.

    PYTHONPATH=src python benchmarks/bake_speed.py --runs 7 --tokens 64 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import steerlab as sl
from steerlab.edit import bake

PROMPT = "Tell me about your day."


def recipes(model) -> dict[str, sl.Steering]:
    g = torch.Generator().manual_seed(0)
    v = torch.randn(model.d_model, generator=g)
    r = torch.randn(model.d_model, generator=g)
    return {
        "add (3 layers, resid_post)": sl.Steering([sl.Add(v / v.norm() * 4.0, layers=[10, 11, 12])]),
        "directional ablation (61 writers)": sl.recipes.directional_ablation(r),
    }


def timed(model, steering, tokens: int) -> float:
    start = time.perf_counter()
    out = model.generate([PROMPT], steering=steering, max_new_tokens=tokens, min_new_tokens=tokens, chat=True)
    elapsed = time.perf_counter() - start
    assert len(out.tokens[0]) == tokens, len(out.tokens[0])
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--json", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 is steadier on a busy machine)")
    parser.add_argument("--only", default=None, help="run only the recipes whose name contains this text")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    model = sl.load("smollm2")
    report = {"model": model.name, "device": str(model.device), "dtype": str(model.dtype), "threads":
              torch.get_num_threads(), "tokens": args.tokens, "runs": args.runs, "recipes": {}}
    for name, steering in recipes(model).items():
        if args.only and args.only not in name:
            continue
        baked = sl.Model(bake(model, steering), model.tokenizer, name="baked")
        timed(model, steering, args.tokens), timed(baked, None, args.tokens), timed(model, None, args.tokens)
        hooks, plain, ratios, unsteered = [], [], [], []
        for i in range(args.runs):
            if i % 2 == 0:
                h, b = timed(model, steering, args.tokens), timed(baked, None, args.tokens)
            else:
                b, h = timed(baked, None, args.tokens), timed(model, steering, args.tokens)
            hooks.append(h), plain.append(b), ratios.append(h / b)
            unsteered.append(timed(model, None, args.tokens))
            print(f"  {name} round {i + 1}: hooks {h:.2f}s baked {b:.2f}s unsteered {unsteered[-1]:.2f}s", flush=True)
        row = {
            "hooks_s": statistics.median(hooks), "baked_s": statistics.median(plain),
            "unsteered_s": statistics.median(unsteered),
            "hooks_tok_s": args.tokens / statistics.median(hooks), "baked_tok_s": args.tokens / statistics.median(plain),
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        }
        report["recipes"][name] = row
        print(f"{name}: hooks {row['hooks_tok_s']:.1f} tok/s, baked {row['baked_tok_s']:.1f} tok/s, "
              f"unsteered {args.tokens / row['unsteered_s']:.1f} tok/s; hooks/baked time "
              f"{row['ratio_median']:.2f}x (range {row['ratio_min']:.2f}-{row['ratio_max']:.2f}, {args.runs} rounds)",
              flush=True)
        del baked
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
