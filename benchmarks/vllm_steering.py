"""vLLM plugin speed and agreement: steered ÷ unsteered throughput inside one vLLM engine (Add on one
layer, on every layer, 8 different recipes in a batch), vLLM-with-steering ÷ steerlab's transformers
path, and greedy agreement with the transformers path (fp32).

Run in the vLLM venv: ``python benchmarks/vllm_steering.py [--batches 8 32] [--repeats 3] [--capture 1000]``.
``--capture N`` also times a capture of every layer's last-token residual for N prompts: the plugin's
``capture_last`` ÷ ``model.capture(positions="last")``, and their largest difference. ``--out`` saves JSON.
Ratios are taken in one process, runs of each configuration interleaved; median and spread printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--transformers", action="store_true", help="also time steerlab's transformers path")
    ap.add_argument("--capture", type=int, default=0, help="also time a last-token capture of this many prompts")
    ap.add_argument("--skip-generation", action="store_true", help="only the capture and agreement parts")
    ap.add_argument("--out", type=Path, help="write every number to this JSON file")
    args = ap.parse_args()
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "load_before": os.getloadavg()}

    import torch
    from vllm import LLM, SamplingParams

    import steerlab as sl
    from steerlab.data.prompts import prompts as prompt_set
    from steerlab.engines.vllm import sampling_args
    from steerlab.models.load import convert_gguf, embedded_gguf

    folder = str(convert_gguf(embedded_gguf("smollm2")))
    llm = LLM(model=folder, dtype="float32", enforce_eager=True, max_model_len=512, max_num_seqs=max(args.batches),
              seed=0, enable_prefix_caching=False)
    torch.set_num_threads(args.threads)
    d = 576
    vecs = [torch.randn(d, generator=torch.Generator().manual_seed(i)) for i in range(8)]
    one = sl.Steering([sl.Add(vecs[0], alpha=2.0, layers=[10])])
    every = sl.Steering([sl.Add(vecs[0], alpha=0.3, layers="all")])
    eight = [sl.Steering([sl.Add(v, alpha=2.0, layers=[10])]) for v in vecs]
    base = prompt_set("neutral")[: max(args.batches)]

    def params(recipe_of_row):
        return [SamplingParams(max_tokens=args.new, temperature=0, ignore_eos=True,
                               extra_args=sampling_args(recipe_of_row(i)) if recipe_of_row(i) else None)
                for i in range(len(rows))]

    configs = {"unsteered": lambda i: None, "add_one_layer": lambda i: one, "add_every_layer": lambda i: every,
               "eight_recipes": lambda i: eight[i % 8]}
    results: dict[tuple[int, str], list[float]] = {}
    for batch in [] if args.skip_generation else args.batches:
        rows = (base * ((batch // len(base)) + 1))[:batch]
        llm.generate(rows[:2], [SamplingParams(max_tokens=4, temperature=0)] * 2, use_tqdm=False)  # warm-up
        sps = {name: params(fn) for name, fn in configs.items()}
        for _ in range(args.repeats):
            for name, sp in sps.items():
                t = time.perf_counter()
                llm.generate(rows, sp, use_tqdm=False)
                results.setdefault((batch, name), []).append(batch * args.new / (time.perf_counter() - t))
                print(f"batch {batch} {name}: {results[(batch, name)][-1]:.1f} tok/s", flush=True)
        if args.transformers:
            model = sl.load("smollm2")
            for _ in range(args.repeats):
                t = time.perf_counter()
                out = model.generate(rows, steering=one, max_new_tokens=args.new, chat=False)
                results.setdefault((batch, "transformers_add_one_layer"), []).append(
                    sum(len(x) for x in out.tokens) / (time.perf_counter() - t))
    print(f"\nthreads={args.threads} new_tokens={args.new} repeats={args.repeats}")
    report["throughput"] = {f"{b}/{n}": v for (b, n), v in results.items()}
    for batch in [] if args.skip_generation else args.batches:
        plain = results[(batch, "unsteered")]
        for name in list(configs)[1:] + (["transformers_add_one_layer"] if args.transformers else []):
            ratios = [s / u for s, u in zip(results[(batch, name)], plain)]
            print(f"batch {batch:3d} {name:28s} tok/s {statistics.median(results[(batch, name)]):7.1f}  "
                  f"÷ unsteered {statistics.median(ratios):.3f} (spread {min(ratios):.3f}-{max(ratios):.3f})")
        if args.transformers:
            r = [v / t for v, t in zip(results[(batch, "add_one_layer")], results[(batch, "transformers_add_one_layer")])]
            print(f"batch {batch:3d} vLLM+steering ÷ transformers (add one layer): {statistics.median(r):.2f}x "
                  f"(spread {min(r):.2f}-{max(r):.2f})")
        print(f"batch {batch:3d} unsteered tok/s {statistics.median(plain):.1f}")

    # greedy agreement, fp32: the same recipe per row through both engines, 64 tokens
    model = sl.load("smollm2")
    rows = base[:8]
    mixed = [None, one, every, eight[3], None, eight[5], one, every]
    outs = llm.generate(rows, [SamplingParams(max_tokens=args.new, temperature=0, ignore_eos=True,
                                              extra_args=sampling_args(r) if r else None) for r in mixed],
                        use_tqdm=False)
    ref = model.generate(rows, steering=mixed, max_new_tokens=args.new, chat=False)
    same = 0
    for i, (o, want) in enumerate(zip(outs, ref.tokens)):
        got = list(o.outputs[0].token_ids)
        want = list(want)
        if got[: len(want)] == want:
            same += 1
        else:
            k = next(j for j, (a, b) in enumerate(zip(got, want)) if a != b)
            print(f"row {i}: first difference at generated token {k} (vLLM {got[k]}, transformers {want[k]})")
    print(f"greedy agreement: {same}/{len(rows)} rows identical over {args.new} tokens")
    report["greedy_identical_rows"] = [same, len(rows)]
    if args.capture:
        report["capture"] = capture(llm, model, args.capture, args.repeats)
    report["load_after"] = os.getloadavg()
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


def capture(llm, model, n: int, repeats: int) -> dict:
    """Every layer's last-token ``resid_post`` for ``n`` prompts: vLLM plugin vs ``model.capture``."""

    from steerlab.data.prompts import prompts as prompt_set
    from steerlab.engines.vllm import capture_last

    base = prompt_set("neutral")
    texts = [f"{base[i % len(base)]} (note {i})" for i in range(n)]
    layers = list(range(model.n_layers))
    times: dict[str, list[float]] = {"vllm": [], "transformers": []}
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        got = capture_last(llm, texts, layers)
        times["vllm"].append(time.perf_counter() - t)
        t = time.perf_counter()
        want = model.capture(texts, sites="resid_post", layers=layers, positions="last", progress=False)
        times["transformers"].append(time.perf_counter() - t)
    diff = max(float((got[s] - want[s].float()).abs().max()) for s in got)
    ratio = [tt / tv for tv, tt in zip(times["vllm"], times["transformers"])]
    print(f"capture of {n} prompts x {len(layers)} layers (last token): vLLM {statistics.median(times['vllm']):.1f} s, "
          f"transformers {statistics.median(times['transformers']):.1f} s: vLLM is {statistics.median(ratio):.2f}x "
          f"(spread {min(ratio):.2f}-{max(ratio):.2f}); largest difference {diff:.2e}")
    return {"n": n, "layers": len(layers), "seconds": times, "speedup": ratio, "max_abs_diff": diff}


if __name__ == "__main__":
    main()
