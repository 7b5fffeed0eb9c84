"""Target 3: streaming capture to disk — peak memory, flatness in the number of prompts, crash resume.

Each measurement runs in its own child process (``python streaming.py child ...``) so its peak
resident memory (``VmHWM`` from ``/proc/self/status``) is its own. The children:

- ``reference``: loads the model and captures two batches in memory — "the model + two batches";
- ``stream``: captures ``n`` prompts (every layer's ``resid_post``, last token) into a folder.

The parent compares peaks (budget: reference + 200 MB) and checks the memory is flat (resident
memory sampled at every batch grows by at most 16 MB from a quarter of the run to its end; the
peak for a few hundred prompts, from another process, is reported beside it but not judged, since
the allocator's jitter between processes is of the same size), then kills a streaming run with
SIGKILL once half of its shards are written, restarts it, counts the batches the restart computes (a hook on block 0) and
checks the result equals an uninterrupted run's, tensor for tensor.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUDGET_MB = 200.0
FLAT_MB = 16.0


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(argv: list[str]) -> None:
    """Entry point of a measured child process; writes a JSON report to the last argument."""
    mode, n, batch_size, folder, threads, report = argv[0], int(argv[1]), int(argv[2]), argv[3], int(argv[4]), argv[5]
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(HERE))
    import steerlab as sl
    from workloads import capture_texts

    model = sl.load("smollm2")
    after_load = _status_mb("VmRSS")
    batches: list[float] = []  # resident memory (MB) as each batch starts its forward pass
    model.bound.blocks[0].register_forward_hook(lambda *a: batches.append(_status_mb("VmRSS")))
    texts = capture_texts(n)
    start = time.perf_counter()
    if mode == "reference":
        model.capture(texts[: 2 * batch_size], sites="resid_post", batch_size=batch_size, progress=False)
    else:
        model.capture(texts, sites="resid_post", batch_size=batch_size, out=folder, progress=False)
    Path(report).write_text(json.dumps({
        "mode": mode, "n": n, "batch_size": batch_size, "rss_after_load_mb": after_load,
        "peak_rss_mb": _status_mb("VmHWM"), "batches_computed": len(batches), "rss_per_batch_mb": batches,
        "seconds": time.perf_counter() - start,
    }))


def _spawn(mode: str, n: int, batch_size: int, folder: Path, threads: int, report: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), "child", mode, str(n), str(batch_size), str(folder),
           str(threads), str(report)]
    return subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})


def _run(mode, n, batch_size, folder, threads, work: Path) -> dict:
    report = work / f"{mode}-{n}-{time.monotonic_ns()}.json"
    proc = _spawn(mode, n, batch_size, folder, threads, report)
    if proc.wait() != 0:
        raise RuntimeError(f"streaming child {mode} n={n} failed with code {proc.returncode}")
    return json.loads(report.read_text())


def _equal(a: Path, b: Path) -> bool:
    import torch

    from steerlab.activations import DiskActivations

    x, y = DiskActivations(a), DiskActivations(b)
    return x.sites == y.sites and all(torch.equal(x[s], y[s]) for s in x.sites)


def run(work: Path, n: int = 2000, small: int = 500, batch_size: int = 16, threads: int = 2, log=print) -> dict:
    """Peak memory for ``small`` and ``n`` prompts, then a SIGKILL half way and a resume over ``n``."""
    import shutil

    work.mkdir(parents=True, exist_ok=True)
    for p in work.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    ref = _run("reference", 2 * batch_size, batch_size, work / "unused", threads, work)
    log(f"  reference (model + two batches in memory): peak {ref['peak_rss_mb']:.0f} MB")
    low = _run("stream", small, batch_size, work / f"stream-{small}", threads, work)
    log(f"  stream {small}: peak {low['peak_rss_mb']:.0f} MB in {low['seconds']:.0f}s")
    full = _run("stream", n, batch_size, work / f"stream-{n}", threads, work)
    log(f"  stream {n}: peak {full['peak_rss_mb']:.0f} MB in {full['seconds']:.0f}s")

    # kill half way, then resume
    folder = work / f"killed-{n}"
    total = -(-n // batch_size)
    proc = _spawn("stream", n, batch_size, folder, threads, work / "killed.json")
    manifest = folder / "manifest.json"
    done = 0
    deadline = time.time() + 3600
    while time.time() < deadline and proc.poll() is None:
        try:
            done = len(json.loads(manifest.read_text())["shards"])
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            done = 0
        if done >= total // 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(json.loads(manifest.read_text())["shards"])
    resumed = _run("stream", n, batch_size, folder, threads, work)
    equal = _equal(folder, work / f"stream-{n}")
    budget = ref["peak_rss_mb"] + BUDGET_MB
    # flat: resident memory from a quarter of the way through the run to its end (the first batches
    # fault the memory-mapped weights in); the peak with few prompts is for information
    trace = full["rss_per_batch_mb"]
    growth = max(trace[len(trace) // 4 :]) - trace[len(trace) // 4]
    peak_growth = full["peak_rss_mb"] - low["peak_rss_mb"]
    result = {
        "n": n, "small": small, "batch_size": batch_size, "reference": ref, "small_run": low, "run": full,
        "budget_mb": budget, "within_budget": full["peak_rss_mb"] <= budget,
        "growth_mb": growth, "peak_growth_mb": peak_growth, "flat": growth <= FLAT_MB,
        "killed_after_shards": done, "total_shards": total, "resume_batches": resumed["batches_computed"],
        "resume_skipped_finished": resumed["batches_computed"] == total - done, "resume_equal": equal,
    }
    log(f"  killed after {done}/{total} shards; restart computed {resumed['batches_computed']} batches "
        f"(expected {total - done}); equal to uninterrupted run: {equal}")
    log(f"  peak {full['peak_rss_mb']:.0f} MB vs budget {budget:.0f} MB (model + two batches + {BUDGET_MB:.0f} MB); "
        f"resident memory from batch {len(trace) // 4} to the end of the {n}-prompt run: {growth:+.1f} MB; "
        f"peak {small} -> {n} prompts: {peak_growth:+.1f} MB")
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(sys.argv[2:])
    else:
        print(json.dumps(run(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/steerlab-stream")), indent=1))
