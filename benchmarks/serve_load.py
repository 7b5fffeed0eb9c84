"""A bounded load on ``steerlab serve`` over loopback: 1, 4, 8, 16 concurrent clients.

Each load sends a fixed number of chat requests (closed loop: every client sends its next request
when its last one returns), each decoding exactly ``--tokens`` tokens (``ignore_eos``). Two loads
per client count, run back to back in alternating order: **mixed** (request ``i`` uses recipe
``i % 8`` of the 8 different recipes of the generation benchmark) and **unsteered** (no recipe).
Reports requests/s, generated tokens/s, p50/p99 latency and errors (must be 0), and the targets:
8 clients >= 4x the tokens/s of 1 client; mixed >= 0.9x unsteered at 8 clients.

    python benchmarks/serve_load.py                       # the embedded model, 32 requests per load
    python benchmarks/serve_load.py --requests 64 --tokens 64 --clients 1,8
    python benchmarks/serve_load.py --engine vllm          # in the vLLM venv: the same load on VLLMEngine

With ``--engine vllm`` the 8 recipes are ones vLLM's plugin reaches (Add, Rotate, Ablate at the
residual stream), since the generation benchmark's set ablates every writer (61 sites).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

import httpx
import torch

import steerlab as sl
from steerlab.serve import Limits, Registry, start
from workloads import GEN_PROMPTS, recipes


def load(url: str, model: str, clients: int, requests: int, tokens: int, steered: bool) -> dict:
    """Run one load; returns its numbers."""
    lock = threading.Lock()
    next_i = [0]
    latencies: list[float] = []
    made = [0]
    errors: list[str] = []

    def client() -> None:
        with httpx.Client(timeout=600) as http:
            while True:
                with lock:
                    i = next_i[0]
                    if i >= requests:
                        return
                    next_i[0] += 1
                body = {"model": model, "messages": [{"role": "user", "content": GEN_PROMPTS[i % len(GEN_PROMPTS)]}],
                        "max_tokens": tokens, "temperature": 0, "ignore_eos": True}
                if steered:
                    body["steering"] = f"r{i % 8}"
                began = time.perf_counter()
                try:
                    r = http.post(url + "/chat/completions", json=body)
                    data = r.json()
                    if r.status_code != 200:
                        raise RuntimeError(f"{r.status_code}: {data}")
                    n = data["usage"]["completion_tokens"]
                except Exception as exc:  # noqa: BLE001 -- counted as an error
                    with lock:
                        errors.append(str(exc)[:200])
                    continue
                with lock:
                    latencies.append(time.perf_counter() - began)
                    made[0] += n

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=3600)
    wall = time.perf_counter() - began
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, round(p * (len(lat) - 1)))] if lat else float("nan")

    return {"clients": clients, "load": "mixed" if steered else "unsteered", "requests": requests,
            "completed": len(lat), "errors": len(errors), "error_samples": errors[:3], "wall_s": wall,
            "req_per_s": len(lat) / wall, "tokens": made[0], "tokens_per_s": made[0] / wall,
            "p50_s": pct(0.5), "p99_s": pct(0.99)}


def residual8(model) -> list:
    """8 different recipes at the residual stream (what vLLM's plugin reaches): Adds, Rotates, Ablates."""
    def vec(seed: int) -> torch.Tensor:
        return torch.randn(model.d_model, generator=torch.Generator().manual_seed(seed))

    mid = model.n_layers // 2
    return ([sl.Steering([sl.Add(vec(k), alpha=2.0, layers=[mid - 2 + k])]) for k in range(4)]
            + [sl.Steering([sl.Rotate(vec(10 + k), angle=20.0, layers=[mid + k])]) for k in range(2)]
            + [sl.Steering([sl.Ablate(vec(20 + k), layers=[mid - 4 + k])]) for k in range(2)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--clients", default="1,4,8,16")
    parser.add_argument("--requests", type=int, default=32, help="requests per load")
    parser.add_argument("--tokens", type=int, default=32, help="tokens each request decodes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--engine", choices=("transformers", "vllm"), default="transformers")
    parser.add_argument("--out", default=None, help="default results/serve_load[_vllm].json")
    args = parser.parse_args(argv)
    args.out = args.out or str(HERE / "results" / ("serve_load_vllm.json" if args.engine == "vllm" else "serve_load.json"))
    torch.set_num_threads(args.threads)
    model = sl.load(args.model)
    mixed = recipes(sl, model.n_layers, model.d_model)["mixed8"] if args.engine == "transformers" else residual8(model)
    registry = Registry(model, recipes={f"r{k}": r for k, r in enumerate(mixed)})
    counts = [int(c) for c in args.clients.split(",")]
    limits = Limits(max_batch=max(counts), max_queue=4 * max(counts), max_tokens=max(512, args.tokens))
    rows = []
    engine = None
    if args.engine == "vllm":
        for key, value in (("VLLM_CPU_KVCACHE_SPACE", "1"), ("VLLM_ENABLE_V1_MULTIPROCESSING", "0"),
                           ("VLLM_CPU_NUM_OF_RESERVED_CPU", "0"), ("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")):
            os.environ.setdefault(key, value)
        from steerlab.engines.vllm.open import open_engine

        engine = open_engine(args.model, registry, max_queue=limits.max_queue, max_batch=max(counts),
                             max_prompt_tokens=256, max_tokens=max(64, args.tokens))
    with start(model, registry, limits=limits, engine=engine) as server:
        load(server.url, model.name, 2, 2, 4, True)  # warm-up
        for n, clients in enumerate(counts):
            order = (True, False) if n % 2 == 0 else (False, True)
            for steered in order:
                row = load(server.url, model.name, clients, args.requests, args.tokens, steered)
                rows.append(row)
                print(f"{clients:>3} clients {row['load']:>9}: {row['req_per_s']:6.2f} req/s "
                      f"{row['tokens_per_s']:7.1f} tok/s  p50 {row['p50_s']:6.2f} s  p99 {row['p99_s']:6.2f} s  "
                      f"errors {row['errors']}", flush=True)
    by = {(r["clients"], r["load"]): r for r in rows}
    verdicts = {}
    if (1, "mixed") in by and (8, "mixed") in by:
        scale = by[(8, "mixed")]["tokens_per_s"] / by[(1, "mixed")]["tokens_per_s"]
        verdicts["8 clients / 1 client (mixed), target >= 4x"] = scale
    for c in counts:
        if (c, "mixed") in by and (c, "unsteered") in by:
            ratio = by[(c, "mixed")]["tokens_per_s"] / by[(c, "unsteered")]["tokens_per_s"]
            verdicts[f"mixed / unsteered at {c} clients, target >= 0.9x"] = ratio
    for k, v in verdicts.items():
        print(f"{k}: {v:.2f}x")
    errors = sum(r["errors"] for r in rows)
    print(f"errors in all loads: {errors}")
    result = {"engine": args.engine,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                          "torch": torch.__version__, "threads": args.threads},
              "settings": vars(args), "rows": rows, "ratios": verdicts}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"-> {args.out}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
