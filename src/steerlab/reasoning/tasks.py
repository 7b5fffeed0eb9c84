"""Reasoning tasks with answers and scorers, from reasoning-gym (procedurally generated, offline).

Each task is a reasoning-gym data set with an easy configuration that a 135M-parameter model can
sometimes solve; answers are extracted from the text and scored with the data set's own scorer.

Instruction-tuned models get the question and ``INSTRUCTION`` through their chat template and end
with their EOS token. A base model (no chat template) gets ``few_shot_prompt``: two worked examples
of the same task, with numbers outside the task's easy range so that no example is a test question,
then the question; it has no EOS habit, so ``answer_end`` ends its sample at the end of its
"Answer:" line (or at a blank line or a new "Question:").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import SteerlabError

#: task name -> easy reasoning-gym configuration
TASKS: dict[str, tuple[str, dict[str, Any]]] = {
    "basic_arithmetic": ("basic_arithmetic", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1,
                                              "operators": ("+", "-"), "allow_parentheses": False,
                                              "allow_negation": False}),
    "chain_sum": ("chain_sum", {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1}),
    "simple_equations": ("simple_equations", {"min_terms": 2, "max_terms": 2, "min_value": 1, "max_value": 10,
                                              "operators": ("+", "-"), "operators_weights": [0.5, 0.5]}),
    "letter_counting": ("letter_counting", {"min_words": 1, "max_words": 2}),
}
INSTRUCTION = "Think step by step, then finish with 'Answer: ' and the final answer."
_ANSWER = re.compile(r"answer\s*(?:is)?\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
#: a base model's sample ends at the end of its answer line, at a blank line or at a new question
_END = re.compile(r"Answer:[^\n]*\S[^\n]*\n|\n[ \t]*\n|Question:")

#: worked examples for base models: task -> (question, worked solution, answer); the numbers lie outside
#: the easy configurations of ``TASKS`` so an example never equals a test question
EXAMPLES: dict[str, list[tuple[str, str, str]]] = {
    "basic_arithmetic": [("Calculate 12 + 9.", "We add 9 to 12. 12 + 9 = 21.", "21"),
                         ("Calculate 3 - 11.",
                          "We subtract 11 from 3. 11 is larger than 3, so the result is negative: 3 - 11 = -8.", "-8")],
    "chain_sum": [("State the final answer to the following arithmetic problem: 12 + 5 - 3 =",
                   "First, 12 + 5 = 17. Then, 17 - 3 = 14.", "14"),
                  ("State the final answer to the following arithmetic problem: 13 - 16 =",
                   "16 is larger than 13, so the result is negative: 13 - 16 = -3.", "-3")],
    "simple_equations": [("Solve for x: x + 13 = 20", "We subtract 13 from both sides: x = 20 - 13 = 7.", "7"),
                         ("Find the value of y in the equation: y - 4 = 11",
                          "We add 4 to both sides: y = 11 + 4 = 15.", "15")],
    "letter_counting": [('How many times does the letter "s" appear in the text: "mississippi river"?',
                         'Spelling it out: m-i-s-s-i-s-s-i-p-p-i r-i-v-e-r. The letter "s" appears 4 times.', "4"),
                        ('How many times does the letter "z" appear in the text: "green apple"?',
                         'Spelling it out: g-r-e-e-n a-p-p-l-e. The letter "z" does not appear.', "0")],
}


@dataclass
class Task:
    """Questions of one reasoning-gym task: ``prompts`` for the model and ``score(i, answer)``."""

    name: str
    questions: list[str]
    answers: list[str]
    data: Any
    entries: list[dict[str, Any]]

    @property
    def prompts(self) -> list[str]:
        """Prompts for an instruction-tuned model (its chat template is applied when generating)."""
        return [f"{q}\n{INSTRUCTION}" for q in self.questions]

    @property
    def few_shot_prompts(self) -> list[str]:
        """Prompts for a base model: worked examples of this task, then each question."""
        return [few_shot_prompt(self.name, q) for q in self.questions]

    def score(self, i: int, answer: str | None) -> bool:
        """Whether ``answer`` is right for question ``i`` (the task's own scorer, full credit only)."""
        if answer is None:
            return False
        return float(self.data.score_answer(answer=answer, entry=self.entries[i])) >= 1.0


def extract(text: str) -> str | None:
    """The final answer: the number after the last "Answer:", else the last number in the text."""
    found = _ANSWER.findall(text)
    if found:
        return _normal(found[-1])
    numbers = _NUMBER.findall(text)
    return _normal(numbers[-1]) if numbers else None


def few_shot_prompt(task: str, question: str) -> str:
    """``question`` after the worked ``EXAMPLES`` of ``task``, ending where the model writes its solution."""
    shots = "".join(f"Question: {q}\nSolution: {s}\nAnswer: {a}\n\n" for q, s, a in EXAMPLES[task])
    return f"{shots}Question: {question}\nSolution:"


def answer_end(tokenizer):
    """``ended(tokens) -> bool`` for a base model's sample, called as it grows: True when the newest
    token completes an "Answer: ..." line, a blank line or a new "Question:" (the sample then ends;
    ``traces.sample(..., end=...)``)."""
    def ended(tokens: list[int]) -> bool:
        # every match ends in "\n" or ":", so only a newest token holding one can complete it: the
        # whole text is decoded only then, not at every token
        if not tokens or not any(c in tokenizer.decode(tokens[-1:]) for c in "\n:"):
            return False
        return _END.search(tokenizer.decode(tokens, skip_special_tokens=True)) is not None
    return ended


def _normal(number: str) -> str:
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return number or "0"


def load_task(name: str, n: int, seed: int = 0) -> Task:
    """``n`` questions of task ``name`` (one of ``TASKS``) generated with ``seed``."""
    if name not in TASKS:
        raise SteerlabError(f"--task {name!r} is not known; use one of {', '.join(TASKS)}")
    if not isinstance(n, int) or n < 1:
        raise SteerlabError(f"the number of questions must be a positive integer, got {n!r}")
    try:
        import reasoning_gym
    except ImportError:
        raise SteerlabError("reasoning tasks need reasoning-gym: pip install 'steerlab[audit]'") from None
    gym_name, config = TASKS[name]
    data = reasoning_gym.create_dataset(gym_name, size=n, seed=seed, **config)
    entries = [data[i] for i in range(n)]
    return Task(name, [e["question"] for e in entries], [str(e["answer"]) for e in entries], data, entries)
