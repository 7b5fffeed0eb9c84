"""steerlab's speed benchmarks: ``make bench`` (quick, default) or ``make bench-full``.

Prints a table of throughput ratios (median of alternating runs, with their spread) and writes
``benchmarks/results/<name>.json`` with the machine, versions, every run's time and every ratio.

    python benchmarks/run.py                 # quick: targets 1, 2, 3 (1,000 prompts) and 5 (12 tokens)
    python benchmarks/run.py --full          # + 20,000-prompt streaming, compile=True, more runs
    python benchmarks/run.py --only generation,capture --runs 7
    python benchmarks/run.py --gpu           # target 6: bf16, random ~1B Llama, batch 1/8/64 (needs CUDA)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# On a shared machine, OpenMP threads that spin while waiting for each other are many times slower
# than threads that sleep; this must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "src")]

SECTIONS = ("generation", "capture", "streaming", "peers", "compile", "gpu")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="everything: 20,000-prompt streaming, compile=True, more runs")
    parser.add_argument("--only", default=None, help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--runs", type=int, default=None, help="timed rounds per comparison (default 5, full 7)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per generation (default 64)")
    parser.add_argument("--gpu", action="store_true", help="run target 6 on CUDA (bf16 random ~1B Llama)")
    parser.add_argument("--name", default=None, help="results file name (default quick/full)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    import report
    import steerlab as sl

    runs = args.runs or (7 if args.full else 5)
    if args.only:
        sections = [s.strip() for s in args.only.split(",") if s.strip()]
        bad = [s for s in sections if s not in SECTIONS]
        if bad:
            parser.error(f"--only: unknown section(s) {bad}; use {', '.join(SECTIONS)}")
    else:
        sections = ["generation", "capture", "streaming", "peers"]
        if args.full:
            sections.append("compile")
        if args.gpu:
            sections.append("gpu")
    name = args.name or ("full" if args.full else "quick")
    record = report.start(name, vars(args), runs, sections)
    log = report.logger()
    comparisons = []
    model = None
    if {"generation", "capture", "compile"} & set(sections):
        model = sl.load("smollm2", device="cpu")
        record["model"] = {"name": model.name, "n_layers": model.n_layers, "d_model": model.d_model,
                           "dtype": str(model.dtype), "parameters": sum(p.numel() for p in model.hf_model.parameters())}
    if "generation" in sections:
        import generation

        log(f"## generation (target 1): {args.tokens} new tokens, batch 1 and 8, {runs} rounds")
        comparisons += generation.run(sl, model, runs=runs, new_tokens=args.tokens, log=log)
        report.save(record, comparisons)
    if "capture" in sections:
        import capture

        log(f"## capture (target 2): 256 prompts, batch 16, {runs} rounds")
        comparisons += capture.run(model, runs=runs, causal_lm=args.full, log=log)
        report.save(record, comparisons)
    if "compile" in sections:
        import generation

        log("## compile=True (target 4): steered Add on every layer, batch 8, vs plain eager generate")
        try:
            comparisons += generation.run_compiled(sl, model, runs=runs, new_tokens=args.tokens, log=log)
        except Exception as err:  # noqa: BLE001 -- any compile failure is reported, not fatal: target 4 is measured
            record["compile_error"] = f"{type(err).__name__}: {err}"
            log(f"  compile=True failed: {record['compile_error']}")
        report.save(record, comparisons)
    if "streaming" in sections:
        import streaming

        n, small = (20000, 2000) if args.full else (1000, 250)
        log(f"## streaming capture (target 3): {n} prompts to disk (quick: 1,000; --full: 20,000), "
            f"peak memory vs {small} prompts, SIGKILL half way and resume")
        record["streaming"] = streaming.run(Path("/tmp") / f"steerlab-bench-stream-{os.getpid()}", n=n,
                                            small=small, threads=args.threads, log=log)
        report.save(record, comparisons)
    if "peers" in sections:
        import peers

        peer_tokens = args.tokens if args.full else min(args.tokens, 12)
        peer_runs = runs if args.full or args.runs else 3
        log(f"## peers (target 5): each in its own venv, ratio to its own plain baseline; {peer_tokens} new tokens"
            + f", {peer_runs} rounds" + ("" if args.full else " (quick; --full: 64 tokens, 7 rounds)"))
        record["peers"] = peers.run(full=args.full, runs=peer_runs, threads=args.threads, tokens=peer_tokens, log=log)
        report.save(record, comparisons)
    if "gpu" in sections:
        import gpu

        log("## GPU (target 6): bf16, random Llama-shaped ~1B, batch 1/8/64")
        record["gpu"] = gpu.run(sl, runs=runs, tokens=args.tokens, log=log)
        comparisons += record["gpu"].pop("comparisons", [])
        report.save(record, comparisons)
    path = report.save(record, comparisons, final=True)
    print(report.table(record, comparisons))
    print(f"\nwritten: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
