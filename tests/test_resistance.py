"""The endogenous steering resistance detector on hand-made texts, and the by-strength report on a tiny model."""

from __future__ import annotations

import pytest

import steerlab as sl
from steerlab.errors import SteerlabError
from steerlab.evaluate.resistance import detect_recovery, steering_resistance, stems
from tiny import tiny_model

PROMPT = "Explain how volcanoes erupt."


def test_stays_on_topic():
    r = detect_recovery(PROMPT, "A volcano erupts when magma rises. The volcanic gases push the magma out of the vent.")
    assert not r.drifted and not r.recovered


def test_drifts_and_never_returns():
    r = detect_recovery(PROMPT, "Sure! Dogs are loyal and friendly pets. My dog loves to play fetch in the park.")
    assert r.drifted and not r.recovered and r.first_off == 1  # "Sure!" is too short to judge


def test_returns_to_the_topic():
    text = "Dogs are loyal and friendly pets. They love long walks outside. Volcanoes erupt when pressure builds up."
    r = detect_recovery(PROMPT, text)
    assert r.drifted and r.recovered and r.how == "topic" and (r.first_off, r.back_at) == (0, 2)


def test_restarts_its_answer():
    text = "Dogs are loyal and friendly pets. Wait, let me start over. Pressure pushes magma up."
    r = detect_recovery(PROMPT, text)
    assert r.recovered and r.how == "restart" and r.back_at == 1


def test_a_restart_word_before_any_drift_is_not_a_recovery():
    r = detect_recovery(PROMPT, "Sorry, volcanoes erupt because magma rises through the crust.")
    assert not r.drifted and not r.recovered


def test_topic_words_and_stems():
    assert "volca" in stems(PROMPT) and "explain" not in stems(PROMPT) and "how" not in stems(PROMPT)
    r = detect_recovery("Tell me something.", "Cats sleep a great deal of the day. Bread is baked in hot ovens.",
                        topic=["bread", "baking"])
    assert r.drifted and r.recovered
    with pytest.raises(SteerlabError, match="no content words"):
        detect_recovery("How are you?", "fine")


def test_by_strength_report_on_a_tiny_model():
    model = tiny_model("llama")
    vector = sl.Direction({1: __import__("torch").ones(model.d_model)})
    rows = steering_resistance(model, ["bread baking ovens", "rivers and lakes"],
                               lambda a: None if a == 0 else sl.Steering([sl.Add(vector, alpha=a)]), [0, 4.0],
                               max_new_tokens=6)
    assert [r["strength"] for r in rows] == [0.0, 4.0] and all(r["n"] == 2 for r in rows)
    for r in rows:
        assert r["drift_rate"] == r["drifted"] / 2 and r["recovered"] == r["by_restart"] + r["by_topic"]
