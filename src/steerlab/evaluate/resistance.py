"""Endogenous steering resistance: steered off-topic, does the model come back to the question mid-generation?

The detector (``detect_recovery``) is deliberately simple and documented, so its numbers can be checked:

1. The *topic* is the prompt's content words (or the ``topic`` words given): lowercase words of four or more
   letters, not in a short stop list, compared by their first five letters ("volcanoes" ~ "volcanic").
2. The generation is cut into sentences (at ``.``, ``!``, ``?`` and line breaks). A sentence of at least
   four words is *on topic* when it holds a topic word, *off topic* otherwise; shorter ones are skipped.
3. The generation *drifted* when some sentence is off topic. It *recovered* when, after its first off-topic
   sentence, a later sentence is on topic ("topic") or restarts the answer with a phrase such as "wait",
   "sorry", "let me start over", "back to your question", "to answer your question" ("restart").

It reads words only: a model that recovers in other words is missed, and one that names a topic word in
passing counts as back. Rates come with their counts; read a few examples before trusting them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..errors import SteerlabError

if TYPE_CHECKING:
    from ..interventions import Steering
    from ..models.model import Model

STOP = frozenset(["about", "above", "after", "again", "also", "always", "another", "because", "been", "before", "being", "below", "between", "both", "could", "does", "doing", "down", "during", "each", "either", "every", "explain", "from", "have", "having", "here", "how", "into", "just", "know", "like", "make", "many", "more", "most", "much", "must", "need", "only", "other", "over", "please", "really", "same", "should", "show", "some", "such", "tell", "than", "that", "their", "them", "then", "there", "these", "they", "thing", "things", "this", "those", "through", "very", "want", "what", "when", "where", "which", "while", "will", "with", "would", "your", "yours", "write", "describe", "give", "list", "briefly", "simple", "simply", "words", "sentence", "sentences", "answer", "question"])
RESTART = re.compile(
    r"\b(wait|sorry|oops|i apologi[sz]e|let me (start over|try again|re-?focus|get back)|start(ing)? over|"
    r"back to (the|your) (question|topic|point)|to answer your question|getting back to|"
    r"returning to (the|your)|as for your question|anyway,)", re.IGNORECASE)
SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
WORD = re.compile(r"[a-zA-Z]+")


def stems(text: str) -> set[str]:
    """The first five letters of each lowercase word of four or more letters not in the stop list."""
    return {w[:5] for w in (m.lower() for m in WORD.findall(text)) if len(w) >= 4 and w not in STOP}


@dataclass(frozen=True)
class Recovery:
    """What the detector saw in one generation (see the module doc)."""

    drifted: bool
    recovered: bool
    how: str | None
    first_off: int | None
    back_at: int | None
    sentences: int


def detect_recovery(prompt: str, text: str, topic: Iterable[str] | None = None) -> Recovery:
    """Whether ``text`` (a generation for ``prompt``) drifted off the prompt's topic and came back."""
    words = stems(" ".join(topic)) if topic is not None else stems(prompt)
    if not words:
        raise SteerlabError(f"prompt {prompt[:60]!r} has no content words to define a topic; pass topic=[...]")
    parts = [s.strip() for s in SENTENCE.split(text) if s and s.strip()]
    first_off: int | None = None
    for i, sentence in enumerate(parts):
        if first_off is not None and RESTART.search(sentence):
            return Recovery(True, True, "restart", first_off, i, len(parts))
        if len(WORD.findall(sentence)) < 4:
            continue
        on = bool(stems(sentence) & words)
        if not on and first_off is None:
            first_off = i
        elif on and first_off is not None:
            return Recovery(True, True, "topic", first_off, i, len(parts))
    return Recovery(first_off is not None, False, None, first_off, None, len(parts))


def steering_resistance(model: Model, prompts: Sequence[str], recipe_for: Any, strengths: Sequence[float],
                        max_new_tokens: int = 64, topics: Sequence[Iterable[str]] | None = None,
                        examples: int = 2) -> list[dict[str, Any]]:
    """Generate for ``prompts`` steered by ``recipe_for(strength)`` (a ``Steering``, or None for none) at each
    strength (greedy), and report per strength: how many generations drifted, how many of those recovered
    (and how), with ``examples`` drifted generations. ``topics``: topic words per prompt (default: its words).
    """
    if not prompts:
        raise SteerlabError("steering_resistance needs at least one prompt")
    if topics is not None and len(topics) != len(prompts):
        raise SteerlabError(f"topics has {len(topics)} entries for {len(prompts)} prompts")
    rows = []
    for strength in strengths:
        recipe: Steering | None = recipe_for(strength)
        out = model.generate(list(prompts), steering=recipe, max_new_tokens=max_new_tokens)
        seen = [detect_recovery(p, t, None if topics is None else topics[i])
                for i, (p, t) in enumerate(zip(prompts, out.texts))]
        drifted = [r for r in seen if r.drifted]
        recovered = [r for r in drifted if r.recovered]
        rows.append({
            "strength": float(strength), "n": len(seen), "drifted": len(drifted), "recovered": len(recovered),
            "by_restart": sum(r.how == "restart" for r in recovered),
            "by_topic": sum(r.how == "topic" for r in recovered),
            "drift_rate": len(drifted) / len(seen),
            "recovery_rate": len(recovered) / len(drifted) if drifted else None,
            "examples": [{"prompt": prompts[i], "text": out.texts[i], **asdict(r)}
                         for i, r in enumerate(seen) if r.drifted][:examples],
        })
    return rows
