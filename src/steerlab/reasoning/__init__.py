"""Audit reasoning from latent states: traces captured while sampling, latent-trajectory and confidence
signals, selection among samples, sequential early selection and online early stopping.

    traces = sl.reasoning.sample(model, ["Calculate 2 + 3."] * 8, segment=16)
    sl.reasoning.signals(traces[0])       # net/cumulative/aligned change, confidences, length
    sl.reasoning.audit(model, "basic_arithmetic", questions=40, samples=8, out="audit/")
"""

from .audit import audit, collect, tokens_saved
from .efficiency import CONCISE, VERBOSE, ContrastTraces, contrast_traces, efficiency_direction, efficiency_method
from .evaluation import Record, auroc, evaluate, paired_difference, wilson, within_question_auroc
from .probe import CorrectnessProbe, features, fit_probe
from .selection import (
    Combined,
    best_by,
    calibrate_threshold,
    fit_combined,
    majority,
    sequential,
    shortest,
    weighted_vote,
)
from .signals import (
    LT_SIGNALS,
    ORIENTATION,
    SIGNALS,
    confidence_signals,
    group_confidence,
    lt_per_layer,
    lt_prefix,
    signals,
    token_confidence,
)
from .stopping import calibrate, calibrate_lt, confidence_stopper, lt_stop_at, lt_stopper, stop_at
from .tasks import EXAMPLES, TASKS, Task, answer_end, extract, few_shot_prompt, load_task
from .traces import SEGMENT, TOP_K, Trace, Tracer, sample

__all__ = [
    "CONCISE",
    "EXAMPLES",
    "LT_SIGNALS",
    "ORIENTATION",
    "SEGMENT",
    "SIGNALS",
    "TASKS",
    "TOP_K",
    "VERBOSE",
    "Combined",
    "ContrastTraces",
    "CorrectnessProbe",
    "Record",
    "Task",
    "Trace",
    "Tracer",
    "answer_end",
    "audit",
    "auroc",
    "best_by",
    "calibrate",
    "calibrate_lt",
    "calibrate_threshold",
    "collect",
    "confidence_signals",
    "confidence_stopper",
    "contrast_traces",
    "efficiency_direction",
    "efficiency_method",
    "evaluate",
    "extract",
    "features",
    "few_shot_prompt",
    "fit_combined",
    "fit_probe",
    "group_confidence",
    "load_task",
    "lt_per_layer",
    "lt_prefix",
    "lt_stop_at",
    "lt_stopper",
    "majority",
    "paired_difference",
    "sample",
    "sequential",
    "shortest",
    "signals",
    "stop_at",
    "token_confidence",
    "tokens_saved",
    "weighted_vote",
    "wilson",
    "within_question_auroc",
]
