"""Evaluate steering: behaviour scorers, utility metrics, strength sweeps and the trade-off frontier.

    table = sl.evaluate.sweep(model, "pca", train_pairs, strengths=[0, 4, 8], prompts=prompts,
                              scorers=[sl.evaluate.Sentiment(), sl.evaluate.Perplexity()])
    best = sl.evaluate.frontier(table, behaviour="sentiment", utility="perplexity")
    result = sl.evaluate.compare(model, "sentiment")           # every method, as `steerlab compare`
"""

from .behaviour import (
                        REFUSAL_SUBSTRINGS,
                        Length,
                        ProbeScore,
                        RefusalScore,
                        RefusalSubstring,
                        Sentiment,
                        is_refusal,
                        vader_compound,
)
from .compare import DEFAULT_METHODS, UTILITIES, Comparison, compare
from .efficiency import Efficiency, ReasoningAccuracy, Truncated, efficiency_sweep
from .forward import continuation_logprobs
from .frontier import frontier, pareto_mask
from .refusal import RefusalEval, RefusalStarts, refusal_eval, refusal_prompts, refusal_recipes, refusal_starts
from .resistance import Recovery, detect_recovery, steering_resistance
from .scorer import Generations, Scorer
from .sweep import default_scorers, generate_grid, sweep
from .task import Item, TaskAccuracy, answer_of, arithmetic_items, first_integer
from .tasks import Task, task_for
from .utility import KL, Fluency, Perplexity, distinct_n, ngrams, repetition_rate

__all__ = [
                        "DEFAULT_METHODS",
                        "KL",
                        "REFUSAL_SUBSTRINGS",
                        "UTILITIES",
                        "Comparison",
                        "Efficiency",
                        "Fluency",
                        "Generations",
                        "Item",
                        "Length",
                        "Perplexity",
                        "ProbeScore",
                        "ReasoningAccuracy",
                        "Recovery",
                        "RefusalEval",
                        "RefusalScore",
                        "RefusalStarts",
                        "RefusalSubstring",
                        "Scorer",
                        "Sentiment",
                        "Task",
                        "TaskAccuracy",
                        "Truncated",
                        "answer_of",
                        "arithmetic_items",
                        "compare",
                        "continuation_logprobs",
                        "default_scorers",
                        "detect_recovery",
                        "distinct_n",
                        "efficiency_sweep",
                        "first_integer",
                        "frontier",
                        "generate_grid",
                        "is_refusal",
                        "ngrams",
                        "pareto_mask",
                        "refusal_eval",
                        "refusal_prompts",
                        "refusal_recipes",
                        "refusal_starts",
                        "repetition_rate",
                        "steering_resistance",
                        "sweep",
                        "task_for",
                        "vader_compound",
]

# audits (docs/audits.md)
from .judge import OpenAIJudge
from .robustness import RobustnessAudit, latent_robustness

__all__ += ["OpenAIJudge", "RobustnessAudit", "latent_robustness"]
