"""The issue-14 measurement, resumable: sample traced answers in chunks of questions, round-robin over
several (model, task) runs, keep every chunk's records on disk, then evaluate whatever was collected.

    python benchmarks/reasoning_full.py sample --runs smollm2:basic_arithmetic,smollm2:chain_sum \\
        --questions 215 --samples 8 --work /tmp/rf/work
    python benchmarks/reasoning_full.py evaluate --runs ... --work /tmp/rf/work --out /tmp/rf/audits

``sample`` is what ``steerlab audit`` does (the same ``collect``, the same seeds per chunk of
``batch // samples`` questions) split so that a run stopped early still leaves whole questions;
``evaluate`` is the audit's evaluation on the questions collected (30% seeded calibration split) and
writes one audit folder per run plus ``benchmarks/results/reasoning_full.json``.
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import time
from pathlib import Path

import torch

import steerlab as sl
from steerlab.reasoning import collect, evaluate, tokens_saved


def _runs(spec: str) -> list[tuple[str, str]]:
    return [tuple(item.split(":", 1)) for item in spec.split(",")]  # type: ignore[misc]


def _chunk_path(work: Path, model: str, task: str, first: int) -> Path:
    return work / f"{model}__{task}" / f"q{first:05d}.pkl"


def sample(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    runs = _runs(args.runs)
    models = {name: sl.load(name) for name in dict.fromkeys(m for m, _ in runs)}
    per_chunk = max(1, args.batch // args.samples)
    log = work / "log.jsonl"
    firsts = list(range(0, args.questions, per_chunk))
    if args.reverse:  # a second process can work from the other end of the same run
        firsts.reverse()
    plan = ([(f, r) for f in firsts for r in runs] if args.order == "chunk" else [(f, r) for r in runs for f in firsts])
    for first, (model, task) in plan:
        n = min(per_chunk, args.questions - first)
        path = _chunk_path(work, model, task, first)
        if path.exists():
            continue
        started = time.time()
        records = collect(models[model], task, n, args.samples, seed=args.seed, first=first,
                          max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                          batch=args.batch, segment=args.segment, progress=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(records))
        tmp.rename(path)
        row = {"model": model, "task": task, "first": first, "questions": n, "samples": args.samples,
               "s": round(time.time() - started, 1), "mean_tokens": sum(r.length for r in records) / len(records),
               "accuracy": sum(r.correct for r in records) / len(records)}
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(row, flush=True)


def _matched(rows: list[dict]) -> dict[str, dict]:
    """Per selector: the cheapest majority@k at least as accurate, and the tokens saved against it
    (negative: the selector costs more than a vote that does as well)."""
    votes = sorted((r for r in rows if r["selector"].startswith("majority@")), key=lambda r: r["tokens"])
    out = {}
    for r in rows:
        match = next((v for v in votes if v["accuracy"] >= r["accuracy"]), None)
        if match is not None:
            out[r["selector"]] = {"majority": match["selector"], "accuracy": match["accuracy"],
                                  "saved_pct": round(100.0 * (1 - r["tokens"] / match["tokens"]), 1)}
    return out


def evaluate_runs(args: argparse.Namespace) -> None:
    from steerlab.reasoning.report import write_report

    work, out = Path(args.work), Path(args.out)
    report: dict = {"command": vars(args), "runs": {}}
    log = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    for model, task in _runs(args.runs):
        chunks = sorted((work / f"{model}__{task}").glob("q*.pkl"))
        records = [r for c in chunks for r in pickle.loads(c.read_bytes())]
        questions = sorted({r.question for r in records})
        order = list(questions)
        random.Random(args.seed).shuffle(order)
        cal = set(order[: max(1, round(args.calibration * len(order)))])
        tokenizer = sl.load(model).tokenizer
        rows, aurocs, settings = evaluate(records, cal, lambda t, tok=tokenizer: tok.decode(t, skip_special_tokens=True),
                                          seed=args.seed)
        sampling_s = sum(r["s"] for r in log if r["model"] == model and r["task"] == task)
        results = {"model": model, "task": task, "questions": len(questions), "samples": args.samples,
                   "seed": args.seed, "calibration": args.calibration, "max_new_tokens": args.max_new_tokens,
                   "temperature": args.temperature, "segment": args.segment, "generation_s": round(sampling_s, 1), **settings,
                   "selection": rows, "signals": aurocs}
        results["tokens_saved_pct"] = {r["selector"]: round(tokens_saved(results, r["selector"]), 1) for r in rows}
        results["matched_majority"] = _matched(rows)
        folder = out / f"{model}__{task}"
        folder.mkdir(parents=True, exist_ok=True)
        write_report(folder, results, records)
        report["runs"][f"{model}:{task}"] = results
        print(f"{model} {task}: {len(questions)} questions ({settings['test_questions']} held out), "
              f"sampling {sampling_s:.0f} s", flush=True)
        for r in rows:
            print(f"  {r['selector']:32s} acc {r['accuracy']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] "
                  f"tokens {r['tokens']:7.1f} ({results['tokens_saved_pct'][r['selector']]:+.1f}% saved)", flush=True)
    Path(args.json).write_text(json.dumps(report, indent=1, default=float))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("sample", "evaluate"))
    parser.add_argument("--runs", default="smollm2:basic_arithmetic,smollm2:chain_sum,gemma3-270m:basic_arithmetic")
    parser.add_argument("--questions", type=int, default=215)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--segment", type=int, default=16, help="tokens per trajectory segment")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--calibration", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reverse", action="store_true", help="take the chunks from the last one down")
    parser.add_argument("--order", choices=("run", "chunk"), default="run",
                        help="run: finish each run before the next; chunk: round-robin over the runs")
    parser.add_argument("--work", default="reasoning_full_work")
    parser.add_argument("--out", default="reasoning_full_audits")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "reasoning_full.json"))
    args = parser.parse_args()
    sample(args) if args.mode == "sample" else evaluate_runs(args)


if __name__ == "__main__":
    main()
