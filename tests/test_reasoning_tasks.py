"""Reasoning tasks: the worked examples for base models are right, never a test question, and a
base model's sample ends at its answer line."""

from __future__ import annotations

import re

import pytest

from steerlab.reasoning.tasks import EXAMPLES, TASKS, answer_end, few_shot_prompt, load_task
from tiny import byte_tokenizer


def _hand_answer(task: str, question: str) -> int:
    """The right answer to an example question, worked out independently of the example's text."""
    if task in ("basic_arithmetic", "chain_sum"):
        expression = re.search(r"(\d+(?: [+-] \d+)+)", question).group(1)
        terms = expression.split()
        total = int(terms[0])
        for op, value in zip(terms[1::2], terms[2::2]):
            total = total + int(value) if op == "+" else total - int(value)
        return total
    if task == "simple_equations":
        _, op, a, b = re.search(r"(\w) ([+-]) (\d+) = (\d+)", question).groups()
        return int(b) - int(a) if op == "+" else int(b) + int(a)
    letter, text = re.search(r'letter "(\w)" appear in the text: "([^"]+)"', question).groups()
    return text.count(letter)


@pytest.mark.parametrize("task", list(TASKS))
def test_examples_are_right_and_never_a_test_question(task):
    pytest.importorskip("reasoning_gym")
    assert set(EXAMPLES) == set(TASKS)
    questions = set(load_task(task, 2000, seed=0).questions)
    for question, solution, answer in EXAMPLES[task]:
        assert int(answer) == _hand_answer(task, question)
        assert question not in questions
        assert "\n" not in solution


def test_few_shot_prompt_ends_where_the_solution_starts():
    prompt = few_shot_prompt("basic_arithmetic", "Calculate 2 + 3.")
    assert prompt.endswith("Question: Calculate 2 + 3.\nSolution:")
    assert prompt.count("Answer: ") == len(EXAMPLES["basic_arithmetic"])


@pytest.mark.parametrize(("text", "done"), [
    (" We add 3 to 2. 2 + 3 = 5.\nAnswer: 5\n", True),
    (" We add 3 to 2. 2 + 3 = 5.\nAnswer: 5", False),   # the answer may still have digits to come
    (" We add 3 to 2.\nAnswer:\n", False),             # an empty answer line is not an answer
    (" 2 + 3 = 5.\n\n", True),                          # a blank line ends the sample
    (" 2 + 3 = 5.\nQuestion:", True),                   # so does the next question
    (" 2 + 3 = 5.\n", False),
])
def test_answer_end(text, done):
    tokenizer = byte_tokenizer(chat=False)
    ended = answer_end(tokenizer)
    assert ended(tokenizer(text, add_special_tokens=False)["input_ids"]) is done


def test_base_model_audit_uses_the_examples_and_ends_samples(monkeypatch):
    """``collect`` on a model without a chat template prompts with the worked examples and ends each
    sample at the answer end rule (checked here on what ``sample`` is called with)."""
    pytest.importorskip("reasoning_gym")
    import importlib

    from tiny import tiny_model

    audit_module = importlib.import_module("steerlab.reasoning.audit")

    model = tiny_model("llama")
    model.tokenizer.chat_template = None
    seen = {}
    real = audit_module.sample

    def spy(m, prompts, **kw):
        seen["prompts"], seen["end"] = prompts, kw["end"]
        return real(m, prompts, **kw)

    monkeypatch.setattr(audit_module, "sample", spy)
    records = audit_module.collect(model, "basic_arithmetic", 2, 2, max_new_tokens=4, segment=2, window=2,
                                   progress=False)
    task = load_task("basic_arithmetic", 2)
    assert seen["prompts"] == [few_shot_prompt("basic_arithmetic", q) for q in task.questions for _ in range(2)]
    assert seen["end"] is not None and len(records) == 4
