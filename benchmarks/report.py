"""The record a benchmark run writes (machine, versions, every time and ratio) and the table it prints."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from timing import Comparison

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def machine() -> dict:
    """CPU, cores, memory, load average, OS: what the numbers depend on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
        mem_gb = int(mem.split()[1]) / 1024 / 1024
    except (OSError, StopIteration):
        mem_gb = float("nan")
    out = {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_gb, 1), "platform": platform.platform(),
           "python": sys.version.split()[0], "load_average": os.getloadavg(),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    try:
        import torch

        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return out


def versions() -> dict:
    import torch
    import transformers

    import steerlab

    commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False)
    dirty = subprocess.run(["git", "-C", str(HERE), "status", "--porcelain", "--", "../src"], capture_output=True,
                           text=True, check=False)
    return {"steerlab": steerlab.__version__, "commit": commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else ""),
            "torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads()}


def start(name: str, args: dict, runs: int, sections: list[str]) -> dict:
    return {"name": name, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(["python"] + sys.argv),
            "args": args, "runs": runs, "sections": sections, "machine": machine(), "versions": versions()}


def save(record: dict, comparisons: list[Comparison], final: bool = False) -> Path:
    """Write the record so far (every section saves as it finishes, so a long run keeps its results)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {**record, "comparisons": [c.summary() for c in comparisons]}
    if final:
        record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        record["machine_at_end"] = {"load_average": os.getloadavg()}
    path = RESULTS / f"{record['name']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, path)
    return path


def logger():
    def log(item):
        if isinstance(item, Comparison):
            q1, q3 = item.quartiles()
            mark = "" if item.holds is None else ("  ok" if item.holds else f"  MISSED (target {item.target}x)")
            cpu = f"  cpu {item.cpu_ratio:.2f}x" if item.cpu_ratio else ""
            print(f"  {item.name:<52} {item.ratio:5.2f}x  min-max {min(item.ratios):.2f}-{max(item.ratios):.2f}"
                  f"  IQR {q1:.2f}-{q3:.2f}{cpu}{mark}", flush=True)
        else:
            print(item, flush=True)

    return log


def _row(task, ratio, spread, target, holds, note="", cpu=""):
    t = "" if target is None else f">= {target:g}x"
    h = "" if holds is None else ("yes" if holds else "NO")
    return f"| {task} | {ratio} | {spread} | {cpu} | {t} | {h} | {note} |"


def table(record: dict, comparisons: list[Comparison]) -> str:
    """A Markdown table of every ratio, the streaming checks and the peers."""
    m = record["machine"]
    v = record["versions"]
    lines = [(f"\n{m['cpu']} ({m['cores']} cores), {v['threads']} torch threads, torch {v['torch']}, "
              f"transformers {v['transformers']}, steerlab {v['commit']}; load average at start "
              f"{m['load_average'][0]:.1f}; median of {record['runs']} alternating rounds"), "",
             "| task | throughput ratio (median, wall clock) | spread min–max (IQR) | CPU-time ratio | target | holds | |",
             "|---|---|---|---|---|---|---|"]
    for c in comparisons:
        q1, q3 = c.quartiles()
        lines.append(_row(c.name, f"{c.ratio:.3f}x", f"{min(c.ratios):.2f}–{max(c.ratios):.2f} ({q1:.2f}–{q3:.2f})",
                          c.target, c.holds, c.note if "compile" in c.name else "",
                          f"{c.cpu_ratio:.3f}x" if c.cpu_ratio else ""))
    s = record.get("streaming")
    if s:
        lines.append(_row(f"streaming {s['n']} prompts: peak RSS", f"{s['run']['peak_rss_mb']:.0f} MB",
                          f"{s['small']} prompts: {s['small_run']['peak_rss_mb']:.0f} MB; growth during the run {s['growth_mb']:+.1f} MB",
                          None, s["within_budget"] and s["flat"],
                          f"budget {s['budget_mb']:.0f} MB = model + two batches ({s['reference']['peak_rss_mb']:.0f} MB)"
                          f" + 200 MB"))
        lines.append(_row(f"streaming {s['n']}: SIGKILL at {s['killed_after_shards']}/{s['total_shards']} shards, resume",
                          f"recomputed {s['resume_batches']} batches", f"expected {s['total_shards'] - s['killed_after_shards']}",
                          None, s["resume_skipped_finished"] and s["resume_equal"],
                          f"equal to uninterrupted run: {s['resume_equal']}"))
    p = record.get("peers")
    if p:
        lines += ["", ("Peers (each in its own venv; ratio = its steered or captured throughput / its own plain "
                       "baseline; steerlab's from the same script and inputs):"), "",
                  "| task | " + " | ".join(p["libraries"]) + " |", "|---|" + "---|" * len(p["libraries"])]
        for task in p["tasks"]:
            cells = []
            for lib in p["libraries"]:
                r = p["results"].get(lib, {}).get(task)
                if isinstance(r, dict):
                    cpu = f"; CPU {r['cpu_ratio']:.2f}x" if r.get("cpu_ratio") else ""
                    cells.append(f"{r['ratio']:.3f}x ({r['ratio_min']:.2f}–{r['ratio_max']:.2f}{cpu})")
                else:
                    cells.append(r or "—")
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
        for line in p.get("verdicts", []):
            lines.append(f"- {line}")
    if record.get("compile_error"):
        lines.append(f"\ncompile=True: {record['compile_error']}")
    g = record.get("gpu")
    if g and g.get("skipped"):
        lines.append(f"\nGPU (target 6): not measured: {g['skipped']}")
    return "\n".join(lines)
