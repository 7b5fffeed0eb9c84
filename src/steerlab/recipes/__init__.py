"""Published steering methods as recipe builders; each returns a ``Steering``.

    r = sl.recipes.caa(direction, layer=15, alpha=4.0)                  # CAA, one layer
    r = sl.recipes.directional_ablation(direction)                      # Arditi et al.
    fitted = sl.recipes.fit(model, "selective", train_pairs)           # fit once ...
    r = fitted.recipe(60.0)                                            # ... one recipe per strength

Builders take plain values (directions, layers, a strength); ``fit`` runs a method's whole recipe
(direction, layers, plane or condition) from training pairs, as ``steerlab compare`` does.
"""

from .ablation import directional_ablation
from .angular import angular
from .base import Fitted
from .caa import activation_addition, caa
from .cast import ConditionFit, cast, condition_fires, condition_scores, f1_grid, find_condition, search_condition_from
from .context import FIT_SITES, FitContext, capture_sites
from .controller import ControllerFit, controller_features, fit_controller, train_controller, weighted
from .grains import grains
from .plane import NORM_SITES, Plane, alignment_from, discriminative_layers, plane_from, steering_plane
from .refusal import (
                      RefusalSelectionWarning,
                      Selection,
                      choose_candidate,
                      filter_candidates,
                      refusal_addition,
                      select_direction,
)
from .refusal_direction import (
                      Candidates,
                      RefusalSelection,
                      candidate_directions,
                      keep_by_score,
                      score_candidates,
                      select_refusal_direction,
)
from .registry import METHODS, MethodSpec, fit, method_names, spec
from .repe import repe
from .scores import LogitScore, contrast_score, refusal_logit_score, refusal_score, sentiment_logit_score, token_ids
from .selective import selective
from .template import PostInstruction, post_instruction, post_instruction_positions

__all__ = [
                      "FIT_SITES",
                      "METHODS",
                      "NORM_SITES",
                      "Candidates",
                      "ConditionFit",
                      "ControllerFit",
                      "FitContext",
                      "Fitted",
                      "LogitScore",
                      "MethodSpec",
                      "Plane",
                      "PostInstruction",
                      "RefusalSelection",
                      "RefusalSelectionWarning",
                      "Selection",
                      "activation_addition",
                      "alignment_from",
                      "angular",
                      "caa",
                      "candidate_directions",
                      "capture_sites",
                      "cast",
                      "choose_candidate",
                      "condition_fires",
                      "condition_scores",
                      "contrast_score",
                      "controller_features",
                      "directional_ablation",
                      "discriminative_layers",
                      "f1_grid",
                      "filter_candidates",
                      "find_condition",
                      "fit",
                      "fit_controller",
                   "grains",
                      "keep_by_score",
                      "method_names",
                      "plane_from",
                      "post_instruction",
                      "post_instruction_positions",
                      "refusal_addition",
                      "refusal_logit_score",
                      "refusal_score",
                      "repe",
                      "score_candidates",
                      "search_condition_from",
                      "select_direction",
                      "select_refusal_direction",
                      "selective",
                      "sentiment_logit_score",
                      "spec",
                      "steering_plane",
                      "token_ids",
                      "train_controller",
                      "weighted",
]
