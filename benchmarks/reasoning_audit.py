"""The measured reasoning audit: ``steerlab audit`` on several reasoning-gym tasks, one JSON of results.

    python benchmarks/reasoning_audit.py --tasks basic_arithmetic,letter_counting --questions 40 --samples 8

Writes one audit folder per task under ``--out`` and ``benchmarks/results/reasoning_audit.json`` with
each task's selection table, AUROCs, tokens saved vs majority vote, settings and wall time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import steerlab as sl
from steerlab.reasoning import audit, tokens_saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--tasks", default="basic_arithmetic,letter_counting")
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", default="reasoning_audit")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "reasoning_audit.json"))
    args = parser.parse_args()
    model = sl.load(args.model)
    report = {"model": args.model, "command": vars(args), "tasks": {}}
    for task in args.tasks.split(","):
        started = time.time()
        results = audit(model, task, args.questions, args.samples, Path(args.out) / task, seed=args.seed,
                        max_new_tokens=args.max_new_tokens, batch=args.batch, overwrite=True, progress=True)
        saved = {r["selector"]: round(tokens_saved(results, r["selector"]), 1) for r in results["selection"]}
        report["tasks"][task] = {**results, "tokens_saved_pct": saved, "wall_s": round(time.time() - started, 1)}
        print(f"{task}: {time.time() - started:.0f} s", flush=True)
        for r in results["selection"]:
            print(f"  {r['selector']:28s} acc {r['accuracy']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] "
                  f"tokens {r['tokens']:7.1f} ({saved[r['selector']]:+.1f}% saved)", flush=True)
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
