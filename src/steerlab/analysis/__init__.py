"""Read and explain: where a behaviour is decided and which states and components cause it.

    import steerlab as sl
    model = sl.load("smollm2")
    lens = sl.analysis.logit_lens(model, "The capital of France is", target=" Paris", positions="all")
    sl.analysis.plot_lens(lens).savefig("lens.png")
    sweep = sl.analysis.activation_patching(model, "The capital of France is", "The capital of Italy is",
                                            answers=(" Paris", " Rome"))

Every analysis returns a pandas table (or a small dataclass holding one) and has a figure
function; each module's docstring gives its formulas and the paper it follows.
"""

from .do_interventions import necessity_metrics, step_interventions, step_spans
from .figures import plot_heads, plot_lens, plot_necessity, plot_patching, plot_probe_map, plot_subspace, plot_trace
from .heads import frozen_norm, head_ablation, head_attribution, head_interchange, head_writes
from .lens import Commitment, commitment_layer, lens_commitment, logit_lens
from .patching import activation_patching, patching_summary
from .probe_map import Probe, as_probe, fit_probe, probe_map, probe_trace
from .subspace import SubspaceCheck, reader_weight, split_direction, subspace_check

__all__ = [
    "Commitment", "Probe", "SubspaceCheck", "activation_patching", "as_probe", "commitment_layer", "fit_probe",
    "frozen_norm", "head_ablation", "head_attribution", "head_interchange", "head_writes", "lens_commitment", "logit_lens",
    "necessity_metrics", "patching_summary", "plot_heads", "plot_lens", "plot_necessity", "plot_patching",
    "plot_probe_map", "plot_subspace", "plot_trace", "probe_map", "probe_trace", "reader_weight",
    "split_direction", "step_interventions", "step_spans", "subspace_check",
]

# audits (docs/audits.md); the concept-injection sweep is steerlab.analysis.introspection.introspection
from .audit_figures import plot_introspection, plot_robustness, plot_truth_stability
from .truth import TruthStability, truth_stability

__all__ += ["TruthStability", "plot_introspection", "plot_robustness", "plot_truth_stability", "truth_stability"]
