"""Cross-model transfer (the Master Key hypothesis): carry a direction from one model into another.

A rank-``r`` linear map ``A`` from the source model's activations (one layer) to the target's (one
layer) is fitted by least squares on activations of the same unlabeled texts in both models, then
truncated to rank ``r`` by SVD (METHODS.md §9: ``H_t ≈ H_s Aᵀ`` on centred activations). Layers and
rank are chosen by held-out reconstruction R² (texts split, not tokens). A source direction ``v_s``
becomes ``v_t = A v_s``, a ``Direction`` of the target model that every intervention accepts::

    m = sl.directions.transfer.fit(source, target, texts, source_layers=[15])
    d_t = m.map(d_s)                       # Direction for the target, at m.target_layer
    target.generate(prompts, steering=sl.Steering([sl.Add(d_t, alpha=4.0, layers=d_t.layers)]))

Paired samples (``positions``): ``"aligned"`` takes the tokens that end at the same character in
both tokenizations (so models with different tokenizers pair up word by word), ``"last"`` each
text's last token, ``"mean"`` each text's mean over tokens. Target layers are by default those of
similar relative depth (``depth_band``): R² alone favours the first layers, which mostly hold the
token's own embedding.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from .. import io
from ..errors import DataError, ShapeError, SteerlabError
from .direction import Direction

if TYPE_CHECKING:
    import pandas as pd

    from ..models.model import Model

FORMAT = "steerlab.transfer/1"
MARKER = "transfer.json"
POSITIONS = ("aligned", "last", "mean")
#: ranks tried by default (those above min(d_source, d_target, n_train) are dropped; the full rank is added)
DEFAULT_RANKS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


# --- the math on tensors -------------------------------------------------------------------------
def least_squares(x: torch.Tensor, y: torch.Tensor, ridge: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(A, mean_x, mean_y)`` with ``A = argmin ‖(Y - ȳ) - (X - x̄) Aᵀ‖² + λ‖A‖²`` in float64.

    ``λ = ridge * trace(XcᵀXc) / d_x`` (a scale-free ridge; 0 is plain least squares, solved with
    ``lstsq`` so a rank-deficient ``X`` still gets the minimum-norm solution).
    """
    return _solver(x, ridge)(y)


def _solver(x: torch.Tensor, ridge: float) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``least_squares(x, ·, ridge)`` with the work that depends on ``x`` alone done once."""
    x64 = x.double()
    mx = x64.mean(0)
    xc = x64 - mx
    gram = None
    if ridge > 0:
        gram = xc.T @ xc
        gram.diagonal().add_(ridge * float(gram.diagonal().sum()) / gram.shape[0])
        chol = torch.linalg.cholesky(gram)

    def solve(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y64 = y.double()
        my = y64.mean(0)
        yc = y64 - my
        if gram is not None:
            a = torch.cholesky_solve(xc.T @ yc, chol).T
        else:
            a = torch.linalg.lstsq(xc, yc, driver="gelsd").solution.T
        return a, mx, my

    return solve


def rank_r2(a: torch.Tensor, mean_x: torch.Tensor, mean_y: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
            ranks: Sequence[int]) -> list[float]:
    """Held-out R² of the SVD truncations of ``a`` to each rank, on ``(x, y)``, all from one SVD.

    ``R² = 1 - Σ‖y - ŷ‖² / Σ‖y - mean_y‖²`` (variance-weighted over every output dimension), with
    ``ŷ = (x - mean_x) A_rᵀ + mean_y`` and ``A_r = U_r S_r V_rᵀ``. Because ``U``'s columns are
    orthonormal, ``‖yc - Σ_i s_i (xc v_i) u_iᵀ‖² = ‖yc‖² - Σ_i (2 s_i ⟨xc v_i, yc u_i⟩ - s_i² ‖xc v_i‖²)``.
    """
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    xc, yc = x.double() - mean_x, y.double() - mean_y
    p, q = xc @ vh.T, yc @ u  # [n, k] each
    gain = 2 * s * (p * q).sum(0) - s**2 * (p * p).sum(0)
    total = float((yc * yc).sum())
    if total <= 0:
        raise DataError("the held-out target activations do not vary; R² is undefined")
    cum = torch.cumsum(gain, 0)
    return [1.0 - (total - float(cum[min(r, len(s)) - 1])) / total for r in ranks]


def truncate(a: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(left [d_y, r], right [r, d_x])`` with ``left @ right`` the best rank-``r`` approximation of ``a``."""
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    r = min(rank, len(s))
    return u[:, :r] * s[:r], vh[:r]


def split_groups(groups: torch.Tensor, test: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks ``(train, held_out)`` over samples, splitting whole groups (texts), never one text's tokens."""
    ids = sorted(set(groups.tolist()))
    if len(ids) < 2:
        raise DataError(f"need samples from at least 2 texts to hold some out, got {len(ids)}")
    n_test = min(len(ids) - 1, max(1, round(test * len(ids))))
    random.Random(seed).shuffle(ids)
    held = torch.isin(groups, torch.tensor(ids[:n_test], dtype=groups.dtype))
    return ~held, held


# --- the map -------------------------------------------------------------------------------------
@dataclass
class LinearMap:
    """``y ≈ (x - source_mean) Aᵀ + target_mean`` with ``A = left @ right`` of rank ``rank``.

    ``source_layer``/``target_layer``: the resid_post layers it maps between; ``r2``: held-out R² of
    this map; ``scores``: the held-out R² of every (source layer, target layer, rank) tried.
    """

    left: torch.Tensor            # [d_target, rank]
    right: torch.Tensor           # [rank, d_source]
    source_mean: torch.Tensor     # [d_source]
    target_mean: torch.Tensor     # [d_target]
    source_layer: int
    target_layer: int
    r2: float
    meta: dict[str, Any] = field(default_factory=dict)
    scores: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rank(self) -> int:
        return int(self.right.shape[0])

    @property
    def weight(self) -> torch.Tensor:
        """``A`` as a dense ``[d_target, d_source]`` matrix."""
        return self.left @ self.right

    @property
    def d_source(self) -> int:
        return int(self.right.shape[1])

    @property
    def d_target(self) -> int:
        return int(self.left.shape[0])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Map source activations ``[..., d_source]`` to predicted target activations ``[..., d_target]``."""
        x = self._check(torch.as_tensor(x), "activations")
        out = ((x.double() - self.source_mean.double()) @ self.right.double().T) @ self.left.double().T
        return (out + self.target_mean.double()).to(x.dtype if x.is_floating_point() else torch.float32)

    def map_vector(self, v: torch.Tensor) -> torch.Tensor:
        """``A v``: a difference of source activations carried into the target (no offset)."""
        v = self._check(torch.as_tensor(v), "vector")
        return (self.left.double() @ (self.right.double() @ v.double())).float()

    def r2_on(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """R² of this map on new paired activations (see ``rank_r2``)."""
        y = torch.as_tensor(y)
        if y.shape[-1] != self.d_target:
            raise ShapeError(f"target activations have width {y.shape[-1]}, but this map gives {self.d_target}")
        yc = y.double() - self.target_mean.double()
        err = y.double() - self(x).double()
        return 1.0 - float((err * err).sum()) / float((yc * yc).sum())

    def map(self, direction: Direction, target: Model | None = None) -> Direction:
        """The source ``direction``'s vector at ``source_layer``, mapped: a ``Direction`` for the target model
        holding ``target_layer`` (raw ``A v``; rescale it to the norm you want).

        A direction made for a model of another width than the map's source is refused; ``target``
        (optional) is checked against the map's target model.
        """
        if self.source_layer not in direction:
            raise SteerlabError(f"this map reads source layer {self.source_layer}, but the direction holds layers "
                                f"{direction.layers}; fit a map with source_layers=[...] that includes one of them")
        made_for = direction.meta.get("model") or {}
        want = self.meta.get("source") or {}
        if made_for.get("shape_hash") and want.get("shape_hash") and made_for["shape_hash"] != want["shape_hash"]:
            raise ShapeError(f"this direction was made for {made_for.get('name')!r}, but the map's source is "
                             f"{want.get('name')!r}")
        if target is not None:
            have = self.meta.get("target") or {}
            if have.get("shape_hash") and have["shape_hash"] != target.fingerprint["shape_hash"]:
                raise ShapeError(f"this map's target is {have.get('name')!r}, not {target.name!r}")
        vector = self.map_vector(direction[self.source_layer])
        source_info = {k: direction.meta[k] for k in ("method", "site", "dataset", "model") if k in direction.meta}
        meta = {"method": "transfer", "site": direction.meta.get("site", "resid_post"),
                "model": self.meta.get("target") or (target.fingerprint if target is not None else None),
                "source_direction": source_info, "source_layer": self.source_layer,
                "map": {"rank": self.rank, "r2": self.r2, "source_layer": self.source_layer,
                        "target_layer": self.target_layer}}
        if meta["model"] is None:
            del meta["model"]
        return Direction({self.target_layer: vector}, meta=meta)

    def _check(self, x: torch.Tensor, what: str) -> torch.Tensor:
        if x.shape[-1] != self.d_source:
            raise ShapeError(f"{what} have width {x.shape[-1]}, but this map reads the source's width {self.d_source}")
        return x

    def table(self) -> pd.DataFrame:
        """``scores`` as a DataFrame (source_layer, target_layer, rank, r2)."""
        import pandas as pd

        return pd.DataFrame(self.scores, columns=["source_layer", "target_layer", "rank", "r2"])

    # --- saving ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write ``path/transfer.json`` and ``path/map.safetensors`` atomically (built beside ``path``).

        An existing ``path`` is refused unless ``overwrite=True``, and even then only a saved map is replaced.
        """
        doc = {"format": FORMAT, "source_layer": self.source_layer, "target_layer": self.target_layer,
               "rank": self.rank, "d_source": self.d_source, "d_target": self.d_target, "r2": self.r2,
               "meta": self.meta, "scores": self.scores}
        text = io.dumps(doc)
        tensors = {"left": self.left, "right": self.right, "source_mean": self.source_mean,
                   "target_mean": self.target_mean}

        def fill(tmp: Path) -> None:
            (tmp / MARKER).write_text(text, encoding="utf-8")
            save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(tmp / "map.safetensors"))

        return io.save_folder(path, fill, marker=MARKER, format=FORMAT, overwrite=overwrite, what="transfer map")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LinearMap:
        """Read a map written by ``save``; shapes and values are checked, not trusted."""
        folder, doc = io.read_artifact(path, MARKER, FORMAT, "transfer map")
        ints = {k: doc.get(k) for k in ("source_layer", "target_layer", "rank", "d_source", "d_target")}
        if not all(type(v) is int and v >= 0 for v in ints.values()) or not isinstance(doc.get("r2"), (int, float)):
            raise DataError(f"{folder / MARKER}: layers, rank and widths must be non-negative integers and r2 a number")
        t = io.read_safetensors(folder / "map.safetensors", f"transfer map {str(folder)!r}")
        shapes = {"left": (ints["d_target"], ints["rank"]), "right": (ints["rank"], ints["d_source"]),
                  "source_mean": (ints["d_source"],), "target_mean": (ints["d_target"],)}
        for name, shape in shapes.items():
            if name not in t or tuple(t[name].shape) != shape:
                got = tuple(t[name].shape) if name in t else "missing"
                raise DataError(f"{folder}/map.safetensors: {name} is {got}, expected {shape}")
            io.check_finite(t[name], f"{folder}: {name}")
        meta, scores = doc.get("meta", {}), doc.get("scores", [])
        if not isinstance(meta, dict) or not isinstance(scores, list):
            raise DataError(f"{folder / MARKER}: 'meta' must be an object and 'scores' a list")
        return cls(t["left"], t["right"], t["source_mean"], t["target_mean"], int(doc["source_layer"]),
                   int(doc["target_layer"]), float(doc["r2"]), meta, scores)

    def __repr__(self) -> str:
        names = [(self.meta.get(k) or {}).get("name", "?") for k in ("source", "target")]
        return (f"LinearMap({names[0]} layer {self.source_layer} -> {names[1]} layer {self.target_layer}, "
                f"rank {self.rank}, held-out R² {self.r2:.3f})")


def fit_from(xs: dict[int, torch.Tensor], ys: dict[int, torch.Tensor], groups: torch.Tensor | None = None,
             ranks: Iterable[int] | None = None, test: float = 0.2, seed: int = 0, ridge: float = 1e-4,
             meta: dict[str, Any] | None = None) -> LinearMap:
    """Fit a map for every (source layer, target layer) pair on a ``1 - test`` share of the texts, score each
    rank's truncation by R² on the held-out texts, and return the best (highest held-out R²; ties: lower rank).

    ``xs``/``ys``: ``{layer: [n, d]}`` paired activations (row i of every tensor is the same sample);
    ``groups``: the text each sample came from (default: each its own), so the split never cuts a text.
    The returned map is the training-split fit; its ``scores`` hold every R² tried.
    """
    if not xs or not ys:
        raise DataError("fit_from needs at least one source layer and one target layer")
    n = {int(t.shape[0]) for t in [*xs.values(), *ys.values()]}
    if len(n) != 1:
        raise ShapeError(f"paired activations must have the same number of rows, got {sorted(n)}")
    if not 0 < test < 1:
        raise SteerlabError(f"test={test!r} must be a share between 0 and 1")
    if ridge < 0:
        raise SteerlabError(f"ridge={ridge!r} must be at least 0")
    rows = n.pop()
    groups = torch.arange(rows) if groups is None else torch.as_tensor(groups)
    if groups.shape != (rows,):
        raise ShapeError(f"groups has shape {tuple(groups.shape)}, expected ({rows},)")
    train, held = split_groups(groups, test, seed)
    d_x, d_y = next(iter(xs.values())).shape[1], next(iter(ys.values())).shape[1]
    top = min(d_x, d_y, int(train.sum()))
    wanted = sorted({int(r) for r in (ranks if ranks is not None else (*DEFAULT_RANKS, top))})
    if not wanted or wanted[0] < 1:
        raise SteerlabError(f"ranks={wanted} must be positive integers")
    use = [r for r in wanted if r <= top] or [top]
    scores: list[dict[str, Any]] = []
    best: tuple[float, int, int, int] | None = None
    for ls, x in xs.items():
        solve = _solver(x[train], ridge)
        for lt, y in ys.items():
            a, mx, my = solve(y[train])
            for r, value in zip(use, rank_r2(a, mx, my, x[held], y[held], use)):
                scores.append({"source_layer": ls, "target_layer": lt, "rank": r, "r2": value})
                if best is None or value > best[0] + 1e-12:
                    best = (value, ls, lt, r)
    assert best is not None
    r2, ls, lt, r = best
    a, mx, my = least_squares(xs[ls][train], ys[lt][train], ridge)
    left, right = truncate(a, r)
    info = {"ridge": ridge, "test": test, "seed": seed, "n_samples": rows, "n_train": int(train.sum()),
            "n_held_out": int(held.sum()), "n_texts": len(set(groups.tolist())), "ranks": use,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(meta or {})}
    return LinearMap(left.float(), right.float(), mx.float(), my.float(), ls, lt, r2, info, scores)


# --- paired activations from two models ----------------------------------------------------------
def aligned_tokens(source_offsets: Sequence[tuple[int, int]], target_offsets: Sequence[tuple[int, int]]
                   ) -> list[tuple[int, int]]:
    """``(source index, target index)`` of tokens that end at the same character in both tokenizations.

    Special tokens (empty spans) and each sequence's first token (an attention sink with outsized
    activations in many models) are skipped; where several tokens end at one character (bytes of one
    character), the last is used.
    """
    def ends(offsets: Sequence[tuple[int, int]]) -> dict[int, int]:
        out = {}
        for i, (a, b) in enumerate(offsets):
            if i > 0 and b > a:
                out[int(b)] = i
        return out

    s, t = ends(source_offsets), ends(target_offsets)
    return [(s[c], t[c]) for c in sorted(set(s) & set(t))]


def _offsets(model: Model, text: str, n_tokens: int) -> list[tuple[int, int]]:
    tok = model.tokenizer
    if not getattr(tok, "is_fast", False):
        raise SteerlabError(f"positions='aligned' needs a fast tokenizer with offsets; {model.name!r} has "
                            f"{type(tok).__name__}; use positions='last' or 'mean'")
    enc = tok(text, return_offsets_mapping=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    if len(offsets) != n_tokens:
        raise DataError(f"{model.name!r} tokenised {text[:40]!r} into {len(offsets)} tokens with offsets but "
                        f"captured {n_tokens}; use positions='last' or 'mean'")
    return offsets


def paired_activations(source: Model, target: Model, texts: Sequence[str], source_layers: Sequence[int],
                       target_layers: Sequence[int], positions: str = "aligned", per_text: int | None = 8,
                       seed: int = 0, batch_size: int = 16, site: str = "resid_post", progress: bool | None = None
                       ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], torch.Tensor]:
    """``(xs, ys, groups)``: the same samples' activations in both models, ``{layer: [n, d]}`` each.

    ``positions="aligned"`` keeps at most ``per_text`` aligned tokens per text (always its last, the
    rest drawn with ``seed``; None keeps all); ``"last"``/``"mean"`` give one sample per text.
    Captured in chunks, so memory holds only the kept samples.
    """
    from ..progress import bar

    if positions not in POSITIONS:
        raise SteerlabError(f"positions={positions!r} is not allowed; use one of {', '.join(POSITIONS)}")
    if per_text is not None and per_text < 1:
        raise SteerlabError(f"per_text={per_text!r} must be at least 1 (or None for every aligned token)")
    texts = list(texts)
    if len(texts) < 2 or not all(isinstance(t, str) and t.strip() for t in texts):
        raise DataError("transfer needs at least 2 non-empty texts")
    xs: dict[int, list[torch.Tensor]] = {layer: [] for layer in source_layers}
    ys: dict[int, list[torch.Tensor]] = {layer: [] for layer in target_layers}
    groups: list[int] = []
    rng = random.Random(seed)
    chunk = max(batch_size, 32)
    mode = "all" if positions == "aligned" else positions
    with bar("paired activations", (len(texts) + chunk - 1) // chunk, progress) as advance:
        for begin in range(0, len(texts), chunk):
            part = texts[begin:begin + chunk]
            a = source.capture(part, sites=site, layers=list(source_layers), positions=mode, batch_size=batch_size,
                               progress=False)
            b = target.capture(part, sites=site, layers=list(target_layers), positions=mode, batch_size=batch_size,
                               progress=False)
            if positions != "aligned":
                for layer in source_layers:
                    xs[layer].append(torch.as_tensor(a[f"layers.{layer}.{site}"]).float())
                for layer in target_layers:
                    ys[layer].append(torch.as_tensor(b[f"layers.{layer}.{site}"]).float())
                groups.extend(range(begin, begin + len(part)))
                advance()
                continue
            first_s, first_t = a[f"layers.{source_layers[0]}.{site}"], b[f"layers.{target_layers[0]}.{site}"]
            for i, text in enumerate(part):
                pairs = aligned_tokens(_offsets(source, text, len(first_s[i])), _offsets(target, text, len(first_t[i])))
                if not pairs:
                    continue
                if per_text is not None and len(pairs) > per_text:
                    pairs = [*sorted(rng.sample(pairs[:-1], per_text - 1)), pairs[-1]]
                si = torch.tensor([p[0] for p in pairs])
                ti = torch.tensor([p[1] for p in pairs])
                for layer in source_layers:
                    xs[layer].append(a[f"layers.{layer}.{site}"][i][si].float())
                for layer in target_layers:
                    ys[layer].append(b[f"layers.{layer}.{site}"][i][ti].float())
                groups.extend([begin + i] * len(pairs))
            advance()
    if not groups:
        raise DataError("no token of any text ends at the same character in both tokenizations; "
                        "use positions='last' or 'mean'")
    return ({k: torch.cat(v) for k, v in xs.items()}, {k: torch.cat(v) for k, v in ys.items()},
            torch.tensor(groups))


def _layers(model: Model, layers: int | Sequence[int] | None, arg: str) -> list[int]:
    if layers is None:
        return list(range(model.n_layers))
    chosen = [layers] if isinstance(layers, int) else list(layers)
    out = []
    for layer in chosen:
        if type(layer) is not int or not -model.n_layers <= layer < model.n_layers:
            raise SteerlabError(f"{arg}={layers!r}: {model.name!r} has layers 0-{model.n_layers - 1} "
                                "(negatives count from the end)")
        out.append(layer % model.n_layers)
    if not out:
        raise SteerlabError(f"{arg} is empty; give at least one layer")
    return sorted(set(out))


def depth_band(source: Model, target: Model, source_layers: Sequence[int], band: float = 0.2) -> list[int]:
    """Target layers whose relative depth ``(layer + 1) / n_layers`` is within ``band`` of a source layer's.

    The default candidates of ``fit``: a map's R² is highest at the first layers, where a token's
    activation is mostly its own embedding and is easy to predict from any model, but such a layer
    carries little of what a mid-layer direction means; comparable depth keeps comparable features.
    """
    rel = [(layer + 1) / source.n_layers for layer in source_layers]
    out = [t for t in range(target.n_layers) if any(abs((t + 1) / target.n_layers - r) <= band for r in rel)]
    if not out:
        raise SteerlabError(f"no target layer lies within band={band} of the source layers' depth; widen the band")
    return out


def fit(source: Model, target: Model, texts: Sequence[str], source_layers: int | Sequence[int] | None = None,
        target_layers: int | Sequence[int] | str | None = None, ranks: Iterable[int] | None = None,
        positions: str = "aligned", per_text: int | None = 8, test: float = 0.2, seed: int = 0,
        ridge: float = 1e-4, band: float = 0.2, batch_size: int = 16, progress: bool | None = None) -> LinearMap:
    """Fit the source -> target map on ``texts`` (unlabeled; the same texts run through both models).

    Every pair of ``source_layers`` (default: all) x ``target_layers`` and every rank in ``ranks``
    (default 1, 2, 4, ... 256 and full) is scored by held-out R² on a ``test`` share of the texts;
    the best is returned (``.scores`` has them all). ``target_layers=None`` tries the target layers
    of similar relative depth (``depth_band`` with ``band``), ``"all"`` every layer. Pass the layer
    your direction lives at as ``source_layers``. See the module doc for ``positions``.
    """
    s_layers = _layers(source, source_layers, "source_layers")
    if target_layers is None:
        t_layers = depth_band(source, target, s_layers, band)
    elif isinstance(target_layers, str):
        if target_layers != "all":
            raise SteerlabError(f"target_layers={target_layers!r}: give None (similar depth), 'all' or layer numbers")
        t_layers = list(range(target.n_layers))
    else:
        t_layers = _layers(target, target_layers, "target_layers")
    xs, ys, groups = paired_activations(source, target, texts, s_layers, t_layers, positions, per_text, seed,
                                        batch_size, progress=progress)
    meta = {"source": source.fingerprint, "target": target.fingerprint, "positions": positions,
            "per_text": per_text, "texts_hash": io.texts_hash(texts), "site": "resid_post"}
    return fit_from(xs, ys, groups, ranks=ranks, test=test, seed=seed, ridge=ridge, meta=meta)


def load(path: str | os.PathLike[str]) -> LinearMap:
    """``LinearMap.load``."""
    return LinearMap.load(path)


__all__ = ["DEFAULT_RANKS", "POSITIONS", "LinearMap", "aligned_tokens", "depth_band", "fit", "fit_from", "least_squares", "load",
           "paired_activations", "rank_r2", "split_groups", "truncate"]
