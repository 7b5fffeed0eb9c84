"""Efficiency steering: the concise-minus-verbose direction and the strength sweep against plain-torch
references on a tiny model."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from steerlab.cli import app
from steerlab.errors import SteerlabError
from steerlab.evaluate import efficiency_sweep
from steerlab.models.tokens import encode
from steerlab.reasoning import ContrastTraces, efficiency_direction, extract, load_task
from tiny import tiny_model


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama")


def _mean_state(tiny, text: str, layer: int) -> torch.Tensor:
    ids = torch.tensor([tiny.tokenizer(text)["input_ids"]])
    with torch.no_grad():
        hidden = tiny.hf_model(ids, output_hidden_states=True).hidden_states
    return hidden[layer + 1][0, 1:].double().mean(0)  # layer `layer`'s output (not the last: no final norm), token 0 left out


def test_direction_is_concise_minus_verbose_mean_states_after_the_first_token_by_hand(tiny):
    traces = ContrastTraces(["q1", "q2", "q3"], ["7.", "Answer: 12", "5"], ["First add 3 and 4 to get 7.", "Let us think.", "So"],
                            [2, 10, 1], [26, 13, 2])
    got = efficiency_direction(tiny, traces, layers=[0])
    # the third pair has a one-token concise answer ("5"): left out
    want = (torch.stack([_mean_state(tiny, t, 0) for t in traces.concise[:2]]).mean(0)
            - torch.stack([_mean_state(tiny, t, 0) for t in traces.verbose[:2]]).mean(0))
    assert got.meta["pairs"] == 2
    torch.testing.assert_close(got[0].double(), want, rtol=1e-4, atol=1e-5)


def _greedy_by_hand(tiny, prompt: str, vector: torch.Tensor, alpha: float, layer: int, limit: int) -> list[int]:
    ids = encode(tiny.tokenizer, [prompt], chat=True)[0]
    block = tiny.hf_model.model.layers[layer]

    def hook(module, args, out):
        if isinstance(out, tuple):
            return (out[0] + alpha * vector,) + tuple(out[1:])
        return out + alpha * vector

    handle = block.register_forward_hook(hook)
    new: list[int] = []
    try:
        for _ in range(limit):
            with torch.no_grad():
                logits = tiny.hf_model(torch.tensor([ids + new])).logits[0, -1]
            token = int(logits.argmax())
            if token == 2:
                break
            new.append(token)
    finally:
        handle.remove()
    return new


def test_sweep_lengths_and_accuracy_match_a_hand_steered_decoder(tiny):
    res = efficiency_sweep(tiny, "basic_arithmetic", train=3, test=3, strengths=(0.0, 3.0), layer=0,
                           max_new_tokens=6)
    data = load_task("basic_arithmetic", 6, 0)
    indices = [i for i in range(3, 6) if data.questions[i] not in set(data.questions[:3])]
    vector = res.direction[0].float()
    texts_by, right_by = {}, {}
    for alpha, row in zip((0.0, 3.0), res.results.itertuples()):
        outs = [_greedy_by_hand(tiny, data.prompts[i], vector, alpha, 0, 6) for i in indices]
        assert row.strength == alpha
        assert row.length == pytest.approx(sum(map(len, outs)) / len(outs))
        texts = [tiny.tokenizer.decode(o, skip_special_tokens=True) for o in outs]
        right_by[alpha] = [data.score(i, extract(t)) for i, t in zip(indices, texts)]
        assert row.accuracy == sum(right_by[alpha]) / len(indices)
        assert row.truncated == sum(len(o) >= 6 for o in outs) / len(outs)
        texts_by[alpha] = [s["text"] for s in res.results.attrs["samples"] if s["strength"] == alpha]
        assert texts_by[alpha] == texts
    assert texts_by[0.0] != texts_by[3.0]  # the steering is applied, not a silent no-op
    # paired on the same questions: the unsteered row differs by 0, the steered one by the hand difference
    assert res.results["vs_unsteered"].tolist() == pytest.approx(
        [0.0, (sum(right_by[3.0]) - sum(right_by[0.0])) / len(indices)])
    assert (res.results["vs_unsteered_low"] <= res.results["vs_unsteered"]).all()
    assert set(res.frontier["strength"]) <= {0.0, 3.0} and len(res.frontier) >= 1


def test_sweep_rejects_bad_input(tiny):
    with pytest.raises(SteerlabError, match="layer"):
        efficiency_sweep(tiny, "basic_arithmetic", train=2, test=2, layer=99)
    with pytest.raises(SteerlabError, match="not known"):
        efficiency_sweep(tiny, "nope", train=2, test=2)


def test_cli_efficiency_help_and_errors(tmp_path):
    runner = CliRunner()
    out = runner.invoke(app, ["audit-efficiency", "--help"])
    assert out.exit_code == 0 and "Example" in out.output
    bad = runner.invoke(app, ["audit-efficiency", "--out", str(tmp_path / "e"), "--task", "nope"])
    assert bad.exit_code == 2 and "not known" in bad.output


def test_cli_efficiency_writes_its_files(tiny, tmp_path, monkeypatch):
    from steerlab.cli import common

    monkeypatch.setattr(common, "load_model", lambda *a, **k: tiny)
    out = tmp_path / "eff"
    args = ["audit-efficiency", "--out", str(out), "--train", "2", "--test", "2", "--strengths", "0,2",
            "--layer", "0", "--max-new-tokens", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("efficiency.csv", "frontier.csv", "efficiency.png", "results.json", "direction/direction.json"):
        assert (out / name).is_file()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "already" in again.output
