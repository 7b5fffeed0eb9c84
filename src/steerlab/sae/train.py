"""Train an SAE on a capture store, streaming: shards are memory-mapped and read ``chunk_rows`` rows at a time.

Memory stays at one chunk plus the SAE and its optimiser, whatever the store's size. Every
``checkpoint_every`` steps (and at the end) the SAE, the Adam state, the counters and the read position
are written atomically to ``checkpoint``; a run restarted with the same settings and store continues
from there (a different run into the same folder is refused). TopK is trained on MSE plus the AuxK loss
of Gao et al. (dead features reconstruct the residual), ReLU on MSE plus an L1 penalty weighted by the
decoder norms; decoder rows are kept at unit norm. Inputs are scaled by one number so their mean squared
norm is ``d_in`` while training; the saved SAE has that scale folded into its weights, so it reads raw
activations. Massive activations (attention sinks: the first token
of each text, and any token above ``outlier_ratio`` times the chunk's median norm) are left out.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .. import io
from ..activations import DiskActivations
from ..errors import DataError, SteerlabError
from ..progress import bar
from .model import SAE

CKPT_FORMAT = "steerlab.sae-checkpoint/1"
CKPT_MARKER = "checkpoint.json"


@dataclass
class TrainConfig:
    """Settings of one training run (all of them are part of the checkpoint's key)."""

    d_sae: int = 2048
    architecture: str = "topk"
    k: int = 32
    l1_coefficient: float = 5.0
    lr: float = 1e-3
    batch_size: int = 512
    epochs: int = 2
    chunk_rows: int = 16384
    seed: int = 0
    aux_k: int = 256
    aux_coefficient: float = 1 / 32
    dead_after: int = 20000
    skip_first: bool = True
    outlier_ratio: float = 10.0

    def check(self) -> None:
        if self.architecture not in ("topk", "standard"):
            raise SteerlabError(f"architecture={self.architecture!r} cannot be trained here; train 'topk' or "
                                "'standard' (JumpReLU SAEs load and save, but are not trained by steerlab)")
        for name in ("d_sae", "k", "batch_size", "epochs", "chunk_rows", "aux_k", "dead_after"):
            if getattr(self, name) < 1:
                raise SteerlabError(f"{name}={getattr(self, name)} must be at least 1")
        if self.architecture == "topk" and self.k > self.d_sae:
            raise SteerlabError(f"k={self.k} is above d_sae={self.d_sae}")
        if not self.lr > 0:
            raise SteerlabError(f"lr={self.lr} must be positive")


@dataclass
class TrainResult:
    """The trained SAE, its training log (one entry per ``log_every`` steps) and the run's totals."""

    sae: SAE
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    rows_seen: int = 0
    seconds: float = 0.0


def site_rows(shard: dict[str, torch.Tensor], site: str, skip_first: bool) -> torch.Tensor:
    """One shard's activations at ``site`` as rows ``[n, d]`` (tokens for ``positions="all"`` captures),
    without each text's first token when ``skip_first`` (and the capture holds every token)."""
    x = shard[site]
    lengths = shard.get(f"{site}.__lengths__")
    if lengths is None or not skip_first:
        return x.reshape(-1, x.shape[-1]) if x.dim() > 2 else x
    starts = torch.cumsum(lengths, 0) - lengths
    keep = torch.ones(x.shape[0], dtype=torch.bool)
    keep[starts[lengths > 0]] = False
    return x[keep]


def without_outliers(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """Rows whose norm is at most ``ratio`` times the median row norm."""
    norms = x.norm(dim=-1)
    return x[norms <= ratio * norms.median()] if x.shape[0] else x


def chunks(store: DiskActivations, site: str, config: TrainConfig, start: tuple[int, int, int] = (0, 0, 0)):
    """Yield ``(epoch, shard, offset, rows)``: float32 chunks in a shuffled order fixed by the seed, from ``start``."""
    shards = list(store.shards())
    for epoch in range(start[0], config.epochs):
        for s, shard in enumerate(shards):
            if (epoch, s) < start[:2]:
                continue
            x = site_rows(shard, site, config.skip_first)
            first = start[2] if (epoch, s) == start[:2] else 0
            for offset in range(first, x.shape[0], config.chunk_rows):
                rows = without_outliers(x[offset:offset + config.chunk_rows].float(), config.outlier_ratio)
                g = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch * 10_007 + s * 101 + offset)
                yield epoch, s, offset, rows[torch.randperm(rows.shape[0], generator=g)]


def count_rows(store: DiskActivations, site: str, config: TrainConfig) -> int:
    """Rows one epoch reads (before outliers are dropped), from the shards' headers."""
    return sum(site_rows(shard, site, config.skip_first).shape[0] for shard in store.shards())


def init_sae(first: torch.Tensor, d_in: int, config: TrainConfig, site: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(config.seed)
    w_dec = torch.randn(config.d_sae, d_in, generator=g)
    w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True)
    b_dec = first.mean(0) if first.shape[0] else torch.zeros(d_in)
    scale = (first - b_dec).norm(dim=-1).mean().clamp_min(1e-6) if first.shape[0] else torch.tensor(1.0)
    # encoder = decoder transposed, scaled so a typical input gives pre-activations of order one
    return {"W_enc": (w_dec.T / scale).contiguous(), "b_enc": torch.zeros(config.d_sae), "W_dec": w_dec,
            "b_dec": b_dec.clone()}


def input_scale(first: torch.Tensor) -> float:
    """The factor that makes the rows' mean squared norm equal their width."""
    return float((first.shape[-1] / first.pow(2).sum(-1).mean().clamp_min(1e-12)).sqrt()) if first.shape[0] else 1.0


def _sae_of(params: dict[str, torch.nn.Parameter], config: TrainConfig, site: str, meta: dict[str, Any],
            scale: float) -> SAE:
    """The SAE on raw activations: trained on ``scale * x``, so ``W_enc * scale``, ``W_dec / scale``, ``b_dec / scale``
    (the features are unchanged)."""
    t = {k: v.detach().clone() for k, v in params.items()}
    return SAE(t["W_enc"] * scale, t["b_enc"], t["W_dec"] / scale, t["b_dec"] / scale, config.architecture, site,
               k=config.k if config.architecture == "topk" else None, meta=dict(meta))


def train_sae(store: DiskActivations | str | os.PathLike[str], site: str | None = None, *,
              config: TrainConfig | None = None, checkpoint: str | os.PathLike[str] | None = None,
              checkpoint_every: int = 200, log_every: int = 50, progress: bool | None = None,
              max_steps: int | None = None, **settings: Any) -> TrainResult:
    """Train an SAE on ``site`` of a capture store (a ``DiskActivations`` or its folder).

    ``config`` (or keyword settings of ``TrainConfig``: ``d_sae``, ``architecture``, ``k``, ``lr``,
    ``epochs``, ...) says what to train. ``checkpoint`` (a folder) makes the run resumable. ``max_steps``
    stops early (the checkpoint then resumes it). Returns a ``TrainResult``.
    """
    cfg = config or TrainConfig()
    if settings:
        unknown = sorted(set(settings) - set(asdict(cfg)))
        if unknown:
            raise SteerlabError(f"train_sae got unknown settings {unknown}; it takes {', '.join(asdict(cfg))}")
        cfg = TrainConfig(**{**asdict(cfg), **settings})
    cfg.check()
    acts = store if isinstance(store, DiskActivations) else DiskActivations(store)
    sites = list(acts.manifest["sites"])
    if site is None:
        if len(sites) != 1:
            raise SteerlabError(f"the store holds sites {sites}; pick one with site=")
        site = sites[0]
    if site not in sites:
        raise SteerlabError(f"site {site!r} is not in the store; it holds {', '.join(sites)}")
    total_rows = count_rows(acts, site, cfg)
    if total_rows == 0:
        raise DataError(f"the store at {acts.folder} holds no rows at {site}")
    d_in = next(acts.shards())[site].shape[-1]
    key = {"config": asdict(cfg), "site": site, "store": acts.manifest.get("key"), "rows": total_rows}
    meta = {"model": acts.meta.get("model"), "trained_on": str(acts.folder), "train": asdict(cfg)}
    meta = {k: v for k, v in meta.items() if v is not None}

    state = _load_checkpoint(checkpoint, key) if checkpoint is not None else None
    if state is None:
        first = next(chunks(acts, site, cfg))[3]
        scale = input_scale(first)
        tensors = init_sae(first * scale, d_in, cfg, site)
        position, step, rows_seen, history = (0, 0, 0), 0, 0, []
        last_fired = torch.zeros(cfg.d_sae, dtype=torch.long)
    else:
        tensors, position, step, rows_seen, history, last_fired, scale = (
            state["tensors"], state["position"], state["step"], state["rows_seen"], state["history"],
            state["last_fired"], state["scale"])
    params = {k: torch.nn.Parameter(v.clone()) for k, v in tensors.items()}
    opt = torch.optim.Adam(list(params.values()), lr=cfg.lr, betas=(0.9, 0.999))
    if state is not None and state["adam"]:
        _restore_adam(opt, params, state["adam"], step)
    total_steps = cfg.epochs * -(-total_rows // cfg.batch_size)
    started, last_ckpt = time.perf_counter(), step
    sums: dict[str, float] = {}
    with bar("train SAE", total_steps, progress) as advance:
        advance(step)
        stopped = False
        for epoch, s, offset, rows in chunks(acts, site, cfg, position):
            for b in range(0, rows.shape[0], cfg.batch_size):
                x = rows[b:b + cfg.batch_size] * scale
                losses = _step(params, opt, x, cfg, last_fired, rows_seen)
                rows_seen += x.shape[0]
                step += 1
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0.0) + value
                sums["n"] = sums.get("n", 0.0) + 1
                if step % log_every == 0:
                    n = sums.pop("n")
                    history.append({"step": step, **{k: v / n for k, v in sums.items()}})
                    sums = {}
                advance()
                if max_steps is not None and step >= max_steps:
                    stopped = True
                    break
            next_position = (epoch, s, offset + cfg.chunk_rows)
            if checkpoint is not None and (stopped or step - last_ckpt >= checkpoint_every):
                # a stopped run restarts at the next chunk: the rest of this one is not revisited
                _save_checkpoint(checkpoint, key, params, opt, next_position, step, rows_seen, history, last_fired,
                                 scale)
                last_ckpt = step
            if stopped:
                break
    if checkpoint is not None and not stopped:
        _save_checkpoint(checkpoint, key, params, opt, (cfg.epochs, 0, 0), step, rows_seen, history, last_fired,
                         scale)
    meta["input_scale"] = scale
    return TrainResult(_sae_of(params, cfg, site, meta, scale), history, step, rows_seen, time.perf_counter() - started)


def _step(params: dict[str, torch.nn.Parameter], opt: torch.optim.Optimizer, x: torch.Tensor, cfg: TrainConfig,
          last_fired: torch.Tensor, rows_seen: int) -> dict[str, float]:
    w_enc, b_enc, w_dec, b_dec = params["W_enc"], params["b_enc"], params["W_dec"], params["b_dec"]
    pre = (x - b_dec) @ w_enc + b_enc
    if cfg.architecture == "topk":
        values, index = pre.topk(cfg.k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, index, values.relu())
    else:
        f = pre.relu()
    recon = f @ w_dec + b_dec
    err = x - recon
    mse = err.pow(2).sum(-1).mean()
    loss = mse
    out: dict[str, float] = {}
    fired = (f > 0).any(0)
    last_fired[fired] = rows_seen + x.shape[0]
    dead = (rows_seen - last_fired) > cfg.dead_after
    if cfg.architecture == "topk":
        n_dead = int(dead.sum())
        if n_dead:
            k_aux = min(cfg.aux_k, n_dead)
            dead_pre = pre.masked_fill(~dead, float("-inf"))
            v, i = dead_pre.topk(k_aux, dim=-1)
            aux = torch.zeros_like(pre).scatter(-1, i, v.relu()) @ w_dec
            aux_mse = (err.detach() - aux).pow(2).sum(-1).mean()
            loss = loss + cfg.aux_coefficient * aux_mse * (mse.detach() / aux_mse.detach().clamp_min(1e-12)).clamp(max=1)
            out["aux_mse"] = float(aux_mse.detach())
    else:
        l1 = (f * w_dec.norm(dim=-1)).sum(-1).mean()
        loss = loss + cfg.l1_coefficient * l1
        out["l1"] = float(l1.detach())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():  # remove the gradient part that would change the decoder rows' norms
        g = w_dec.grad
        if g is not None:
            g -= (g * w_dec).sum(-1, keepdim=True) * w_dec
    opt.step()
    with torch.no_grad():
        w_dec.div_(w_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    variance = (x - x.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
    out.update({"mse": float(mse.detach()), "explained_variance": float(1 - mse.detach() / variance),
                "l0": float((f > 0).sum(-1).float().mean()), "dead_fraction": float(dead.float().mean())})
    return out


# --- checkpoints ---------------------------------------------------------------------------------
def _save_checkpoint(folder: str | os.PathLike[str], key: dict[str, Any], params: dict[str, torch.nn.Parameter],
                     opt: torch.optim.Optimizer, position: tuple[int, int, int], step: int, rows_seen: int,
                     history: list[dict[str, float]], last_fired: torch.Tensor, scale: float) -> None:
    tensors = {f"param.{k}": v.detach().clone() for k, v in params.items()}
    names = {id(p): k for k, p in params.items()}
    for p, st in opt.state.items():
        for slot in ("exp_avg", "exp_avg_sq"):
            if slot in st:
                tensors[f"adam.{names[id(p)]}.{slot}"] = st[slot].detach().clone()
    tensors["last_fired"] = last_fired.clone()
    doc = {"format": CKPT_FORMAT, "key": key, "position": list(position), "step": step, "rows_seen": rows_seen,
           "history": history, "scale": scale}
    text = io.dumps(doc)

    def fill(tmp: Path) -> None:
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / CKPT_MARKER).write_text(text, encoding="utf-8")

    io.save_folder(folder, fill, marker=CKPT_MARKER, format=CKPT_FORMAT, overwrite=True, what="SAE checkpoint")


def _load_checkpoint(folder: str | os.PathLike[str], key: dict[str, Any]) -> dict[str, Any] | None:
    path = Path(folder)
    if not path.exists():
        return None
    if not io.is_artifact(path, CKPT_MARKER, CKPT_FORMAT):
        raise SteerlabError(f"checkpoint={str(path)!r} exists and is not an SAE checkpoint; give a new folder")
    doc = io.read_json(path / CKPT_MARKER, "SAE checkpoint")
    if json_key(doc.get("key")) != json_key(key):
        raise SteerlabError(f"checkpoint={str(path)!r} belongs to another training run (other settings or store); "
                            "give a new folder, or remove it to start over")
    t = io.read_safetensors(path / "state.safetensors", f"SAE checkpoint {str(path)!r}")
    adam = {k[len("adam."):]: v for k, v in t.items() if k.startswith("adam.")}
    print(f"resuming SAE training at step {doc['step']} from {path}", flush=True)
    return {"tensors": {k[len("param."):]: v for k, v in t.items() if k.startswith("param.")},
            "adam": adam, "position": tuple(doc["position"]), "step": int(doc["step"]),
            "rows_seen": int(doc["rows_seen"]), "history": list(doc["history"]), "last_fired": t["last_fired"],
            "scale": float(doc["scale"])}


def json_key(value: Any) -> str:
    return io.dumps(value, indent=None)


def _restore_adam(opt: torch.optim.Optimizer, params: dict[str, torch.nn.Parameter], adam: dict[str, torch.Tensor],
                  step: int) -> None:
    for name, p in params.items():
        if f"{name}.exp_avg" in adam:
            opt.state[p] = {"step": torch.tensor(float(step)), "exp_avg": adam[f"{name}.exp_avg"].clone(),
                            "exp_avg_sq": adam[f"{name}.exp_avg_sq"].clone()}
