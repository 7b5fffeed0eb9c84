"""Everything the methods fit from one training set, computed once and shared.

``FitContext`` captures the training pairs at every site the methods read (block input and
output, the two norm outputs) in one pass, and caches what several methods use: the layer sweep,
the mean-difference and PCA directions, the refusal-direction selection (Arditi et al.), the
Selective/Angular plane and the CAST condition. Nothing here sees evaluation prompts.

The directions are fit from these captures with ``acts=``; the pairs are passed along as well, so
each fit checks that the captures came from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import pandas as pd
import torch

from ..data.contrastive import ContrastiveSet
from ..directions import Direction, PairActivations, mean_diff, pca, recommend_layers, sweep
from ..directions.estimators import split_indices
from ..errors import SteerlabError
from ..models import Model
from .cast import ConditionFit, find_condition
from .plane import NORM_SITES, Plane, discriminative_layers, steering_plane
from .refusal import Selection, select_direction
from .scores import LogitScore

#: Sites captured in the one pass over the training pairs.
FIT_SITES = ("resid_post", "resid_pre", *NORM_SITES)


def capture_sites(model: Model, pairs: ContrastiveSet, sites: Sequence[str] = FIT_SITES, positions: str = "last",
                  chat: bool = False, batch_size: int = 32,
                  progress: bool | None = None) -> dict[str, PairActivations]:
    """``{site: PairActivations}`` over every layer, from one forward pass over both sides of ``pairs``."""
    texts = list(pairs.positive) + list(pairs.negative)
    acts = model.capture(texts, sites=list(sites), positions=positions, chat=chat, batch_size=batch_size,
                         progress=progress)
    layers = list(range(model.n_layers))
    out: dict[str, PairActivations] = {}
    n = len(pairs)
    for site in sites:
        stacked = torch.stack([acts.tensor(f"layers.{layer}.{site}") for layer in layers], 1)
        out[site] = PairActivations(stacked[:n], stacked[n:], layers, site, positions, chat, dict(model.fingerprint),
                                    pairs.describe(), model.n_layers)
    return out


def subset(acts: PairActivations, rows: list[int]) -> PairActivations:
    """The same activations restricted to some pairs."""
    return PairActivations(acts.positive[rows], acts.negative[rows], acts.layers, acts.site, acts.positions,
                           acts.chat, acts.model, acts.dataset, acts.n_layers, dict(acts.meta))


class FitContext:
    """The model and the training pairs, with lazily computed, shared fits.

    ``chat``: whether pair texts are chat-templated before capture (requests, as in refusal data).
    ``val``: the share of training pairs held back to *choose* among candidates (``selection``).
    ``score``: a ``LogitScore`` for that selection (None: methods that need one refuse).
    ``condition``: pairs for the CAST condition (``condition_fire`` says which side fires).
    ``selection_stride``: evaluate every k-th candidate layer in the selection (1: all).
    """

    def __init__(self, model: Model, pairs: ContrastiveSet, chat: bool = False, val: float = 0.2, seed: int = 0,
                 score: LogitScore | None = None, condition: ContrastiveSet | None = None,
                 condition_fire: str = "positive", batch_size: int = 32, progress: bool | None = None,
                 selection_stride: int = 1) -> None:
        self.model = model
        self.pairs = pairs
        self.chat = chat
        self.val = val
        self.seed = seed
        self.score = score
        self.condition = condition
        self.condition_fire = condition_fire
        self.batch_size = batch_size
        self.progress = progress
        self.selection_stride = max(1, int(selection_stride))

    @cached_property
    def captured(self) -> dict[str, PairActivations]:
        return capture_sites(self.model, self.pairs, FIT_SITES, "last", self.chat, self.batch_size, self.progress)

    def acts(self, site: str) -> PairActivations:
        """The training pairs' activations at ``site`` over every layer."""
        if site not in FIT_SITES:
            raise SteerlabError(f"site={site!r} is not captured for fitting; use one of {', '.join(FIT_SITES)}")
        return self.captured[site]

    @cached_property
    def sweep(self) -> pd.DataFrame:
        """The per-layer sweep of the training pairs at ``resid_post``."""
        return sweep(self.model, self.pairs, acts=self.acts("resid_post"), seed=self.seed)

    def layers(self, k: int | None) -> list[int]:
        """``k`` consecutive layers recommended by the sweep."""
        return recommend_layers(self.sweep, k=k)

    @cached_property
    def mean_diff(self) -> Direction:
        """Raw mean differences at ``resid_post``, every layer."""
        return mean_diff(self.model, self.pairs, acts=self.acts("resid_post"))

    @cached_property
    def pca(self) -> Direction:
        """Unit ``pca_diff`` vectors at ``resid_post``, every layer."""
        return pca(self.model, self.pairs, acts=self.acts("resid_post"), method="pca_diff")

    @cached_property
    def pca_center_pre(self) -> Direction:
        """Unit ``pca_center`` vectors at each layer's *input* (``resid_pre``), for CAST."""
        return pca(self.model, self.pairs, acts=self.acts("resid_pre"), site="resid_pre", method="pca_center")

    @cached_property
    def split(self) -> tuple[list[int], list[int]]:
        """(fit rows, validation rows) of the training pairs, for selections among candidates."""
        return split_indices(len(self.pairs), self.val, self.seed)

    def required_score(self) -> LogitScore:
        """``score``; a clear error when this context has none (methods that choose among candidates need it)."""
        if self.score is None:
            raise SteerlabError("this data set has no logit score for choosing among candidate directions; give "
                                "score= (sl.recipes.refusal_logit_score or sentiment_logit_score)")
        return self.score

    @cached_property
    def selection(self) -> Selection:
        """The refusal-direction selection of Arditi et al. among ``resid_pre`` mean differences
        (candidates fit on the fit rows only, chosen on the validation rows)."""
        score = self.required_score()
        fit_rows, val_rows = self.split
        layers = list(range(0, self.model.n_layers, self.selection_stride))
        # The fit rows' captures still name the whole training set as their data set, so it is passed here.
        candidates = mean_diff(self.model, self.pairs, acts=subset(self.acts("resid_pre"), fit_rows).select(layers),
                               site="resid_pre")
        val = self.pairs.subset(val_rows)
        return select_direction(self.model, candidates, val.positive, val.negative, score,
                                batch_size=self.batch_size)

    @cached_property
    def plane(self) -> Plane:
        """The (b1, b2) plane of Selective / Angular Steering, from the pre-norm outputs."""
        return steering_plane({site: self.acts(site) for site in NORM_SITES})

    @cached_property
    def discriminative(self) -> tuple[list[int], pd.DataFrame]:
        """Selective Steering's discriminative layers along ``plane.b1``, and the per-hook-point table."""
        return discriminative_layers({site: self.acts(site) for site in NORM_SITES}, self.plane.b1)

    @cached_property
    def condition_fit(self) -> ConditionFit:
        """The CAST condition, searched on the ``condition`` pairs."""
        if self.condition is None:
            raise SteerlabError("CAST needs condition pairs (prompts that should and should not trigger steering)")
        return find_condition(self.model, self.condition, fire=self.condition_fire, batch_size=self.batch_size)
