"""Target 5: steerlab side by side with repeng, steering-vectors, nnsight and TransformerLens.

Each peer runs in its own venv (``benchmarks/.venvs/<peer>``, made by ``make -C benchmarks peers``
or ``bash benchmarks/peers/setup.sh``) as a subprocess, on the same model weights (the embedded
model's converted folder), prompts, texts and vectors, and reports JSON. Ratios are each library's
throughput relative to plain transformers *in its own environment*, so different transformers
versions do not blur the comparison. steerlab runs the same tasks through the same script
protocol. Outputs are compared to steerlab's: generated tokens equal, captures' largest difference.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENVS = HERE / ".venvs"
SCRIPTS = HERE / "peers"
PEERS = {"repeng": "repeng", "steering-vectors": "steering_vectors", "nnsight": "nnsight",
         "transformer-lens": "transformer_lens"}
QUICK_TASKS = ["gen_add_b8", "gen_rows_b8", "capture_all"]
FULL_TASKS = ["gen_add_b1", "gen_add_b8", "gen_rows_b8", "capture_all", "capture_half"]


def model_folder(work: Path) -> Path:
    """The embedded model's converted folder, with a config that transformers 4.x also reads
    (it needs ``rope_theta`` at the top level, v5 writes it inside ``rope_parameters``; and it
    does not know the v5 tokenizer class name)."""
    sys.path.insert(0, str(HERE.parent / "src"))
    from steerlab.models.load import convert_gguf, embedded_gguf

    source = convert_gguf(embedded_gguf("smollm2"))
    target = work / "model"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.name not in ("config.json", "tokenizer_config.json"):
            os.symlink(item, target / item.name)
    tok_config = json.loads((source / "tokenizer_config.json").read_text())
    if tok_config.get("tokenizer_class") == "TokenizersBackend":  # a v5 name; v4 knows the same class as this
        tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (target / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=1))
    config = json.loads((source / "config.json").read_text())
    rope = config.get("rope_parameters") or {}
    config.setdefault("rope_theta", rope.get("rope_theta", 10000.0))
    config.setdefault("torch_dtype", config.get("dtype", "float32"))
    (target / "config.json").write_text(json.dumps(config, indent=1))
    return target


def _job(work: Path, name: str, folder: Path, tasks, runs, threads, tokens, n_texts) -> Path:
    import torch
    from safetensors.torch import save_file

    from workloads import GEN_PROMPTS, capture_texts, vectors

    config = json.loads((folder / "config.json").read_text())
    vec = work / "vectors.safetensors"
    if not vec.exists():
        save_file({"v": vectors(config["num_hidden_layers"], config["hidden_size"], seed=0).contiguous()}, str(vec))
    out = work / name
    job = {"model_dir": str(folder), "prompts": GEN_PROMPTS, "texts": capture_texts(n_texts), "vectors": str(vec),
           "alpha": 2.0, "tokens": tokens, "runs": runs, "threads": threads, "tasks": tasks, "out": str(out)}
    path = work / f"{name}.job.json"
    path.write_text(json.dumps(job))
    del torch
    return path


def _run_one(python: str, script: Path, job: Path, log, timeout: int = 3600) -> dict | str:
    start = time.perf_counter()
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), "PYTHONPATH": ""}
    proc = subprocess.run([python, str(script), str(job)], capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)
    for line in proc.stdout.splitlines():
        log(f"    {line.strip()}")
    result = Path(json.loads(job.read_text())["out"]) / "result.json"
    if proc.returncode != 0 or not result.exists():
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"failed: {tail[:200]}"
    out = json.loads(result.read_text())
    out["seconds"] = time.perf_counter() - start
    return out


def _compare_outputs(work: Path, names: list[str]) -> dict:
    """Each library's outputs against steerlab's: generated tokens equal? capture's max |difference|."""
    import torch
    from safetensors.torch import load_file

    ours_path = work / "steerlab" / "outputs.safetensors"
    if not ours_path.exists():
        return {}
    ours = load_file(str(ours_path))
    out = {}
    for name in names:
        path = work / PEERS.get(name, name) / "outputs.safetensors"
        if not path.exists():
            continue
        theirs = load_file(str(path))
        row = {}
        for key, value in theirs.items():
            if key not in ours:
                continue
            if key.startswith("gen_"):
                same = value.shape == ours[key].shape and bool(torch.equal(value.long(), ours[key].long()))
                agree = float((value.long() == ours[key].long()).float().mean()) if value.shape == ours[key].shape else 0.0
                row[key] = {"tokens_equal": same, "tokens_agree": agree}
            else:
                row[key] = {"max_abs_diff": float((value.float() - ours[key].float()).abs().max())}
        out[name] = row
    return out


def run(full: bool = False, runs: int = 5, threads: int = 2, tokens: int = 64, log=print,
        only: list[str] | None = None) -> dict:
    """Run steerlab and every peer whose venv exists on the same tasks; return the comparison."""
    tasks = FULL_TASKS if full else QUICK_TASKS
    n_texts = 256 if full else 32
    work = Path("/tmp") / f"steerlab-bench-peers-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    folder = model_folder(work)
    results: dict[str, dict | str] = {}
    names = ["steerlab", *(only or PEERS)]
    for name in names:
        key = PEERS.get(name, name)
        python = sys.executable if name == "steerlab" else str(VENVS / key / "bin" / "python")
        if name != "steerlab" and not (VENVS / key / ".ready").exists():
            results[name] = f"not set up (bash benchmarks/peers/setup.sh {key})"
            log(f"  {name}: {results[name]}")
            continue
        log(f"  {name}:")
        job = _job(work, key, folder, tasks, runs, threads, tokens, n_texts)
        results[name] = _run_one(python, SCRIPTS / f"{key}_bench.py", job, log)
        if isinstance(results[name], str):
            log(f"    {results[name]}")
    table = {name: (r["tasks"] if isinstance(r, dict) else {t: r for t in tasks}) for name, r in results.items()}
    outputs = _compare_outputs(work, [n for n in names if n != "steerlab"])
    verdicts = []
    for task in tasks:
        ours = table.get("steerlab", {}).get(task)
        peers = {n: t.get(task) for n, t in table.items() if n != "steerlab" and isinstance(t.get(task), dict)}
        unable = [f"{n} ({t.get(task)})" for n, t in table.items() if n != "steerlab" and isinstance(t.get(task), str)]
        if not isinstance(ours, dict):
            continue
        if peers:
            best = max(peers, key=lambda n: peers[n]["ratio"])
            holds = ours["ratio"] >= peers[best]["ratio"]
            cpu = ""
            if ours.get("cpu_ratio") and peers[best].get("cpu_ratio"):
                cpu = f" (CPU time: {ours['cpu_ratio']:.3f}x vs {peers[best]['cpu_ratio']:.3f}x)"
            # a median below the best peer's counts as level when the two spreads of rounds overlap
            overlap = ours["ratio_q3"] >= peers[best]["ratio_q1"]
            word = "at least as fast" if holds else ("level: behind, but inside the spread of the rounds" if overlap
                                                      else "SLOWER")
            verdicts.append(f"{task}: steerlab {ours['ratio']:.4f}x vs fastest peer {best} {peers[best]['ratio']:.4f}x"
                            f"{cpu} -> {word}")
        if unable:
            verdicts.append(f"{task}: cannot: {'; '.join(unable)}")
    for name, row in outputs.items():
        bits = [f"{k}: " + ("tokens equal" if v.get("tokens_equal") else
                            (f"tokens agree {v['tokens_agree']:.0%}" if "tokens_agree" in v else
                             f"max |diff| {v['max_abs_diff']:.2e}")) for k, v in row.items()]
        if bits:
            verdicts.append(f"outputs of {name} vs steerlab: " + "; ".join(bits))
    for line in verdicts:
        log(f"  {line}")
    return {"libraries": names, "tasks": tasks, "n_texts": n_texts, "tokens": tokens,
            "results": table, "raw": results, "outputs": outputs, "verdicts": verdicts,
            "holds": all("SLOWER" not in v for v in verdicts if "->" in v)}
