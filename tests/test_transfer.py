"""Cross-model transfer (sl.directions.transfer): the fit against plain least squares + SVD written here,
rank and layer selection on planted data, and the whole path on two tiny models of different widths."""

from __future__ import annotations

import pytest
import torch

import steerlab as sl
from steerlab.directions import transfer
from tiny import tiny_model


def planted(n: int = 240, d_x: int = 20, d_y: int = 12, rank: int = 3, noise: float = 0.3, seed: int = 0):
    """X [n, d_x] and Y = X Aᵀ + b + noise with A of exactly ``rank``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_x, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2.0, d_x, dtype=torch.float64)
    u = torch.linalg.qr(torch.randn(d_y, rank, generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(d_x, rank, generator=g, dtype=torch.float64)).Q
    a = u @ torch.diag(torch.tensor([3.0, 2.0, 1.0][:rank], dtype=torch.float64)) @ v.T
    b = torch.randn(d_y, generator=g, dtype=torch.float64)
    y = x @ a.T + b + noise * torch.randn(n, d_y, generator=g, dtype=torch.float64)
    return x, y, a


def reference_fit(x: torch.Tensor, y: torch.Tensor, rank: int):
    """Least squares via the pseudo-inverse of the centred data, truncated to ``rank`` by SVD."""
    mx, my = x.mean(0), y.mean(0)
    a = (torch.linalg.pinv(x - mx) @ (y - my)).T
    u, s, vh = torch.linalg.svd(a)
    return u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank], mx, my


def reference_r2(a, mx, my, x, y) -> float:
    pred = (x - mx) @ a.T + my
    return float(1 - ((y - pred) ** 2).sum() / ((y - my) ** 2).sum())


def test_least_squares_matches_the_pseudo_inverse_and_recovers_a_planted_map():
    x, y, a_true = planted(noise=0.0)
    a, _, my = transfer.least_squares(x, y, ridge=0.0)
    ref, _, _ = reference_fit(x, y, rank=12)
    torch.testing.assert_close(a, ref, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(a, a_true, rtol=1e-8, atol=1e-8)  # noiseless: exact recovery
    torch.testing.assert_close(my, y.mean(0))


def test_fit_from_picks_the_planted_rank_and_equals_the_reference():
    x, y, a_true = planted(n=120, d_x=40, d_y=30, noise=0.5)
    groups = torch.arange(120)
    m = transfer.fit_from({7: x}, {3: y}, groups, ranks=[1, 2, 3, 4, 8, 30], test=0.25, seed=1, ridge=0.0)
    assert m.rank == 3 and (m.source_layer, m.target_layer) == (7, 3)
    train, held = transfer.split_groups(groups, 0.25, 1)
    ref, mx, my = reference_fit(x[train], y[train], rank=3)
    torch.testing.assert_close(m.weight.double(), ref, rtol=1e-4, atol=1e-5)
    # its held-out R² is the one computed by hand, for this rank and for every rank in the table
    assert m.r2 == pytest.approx(reference_r2(ref, mx, my, x[held], y[held]), abs=1e-9)
    for row in m.scores:
        a_r, _, _ = reference_fit(x[train], y[train], rank=row["rank"])
        assert row["r2"] == pytest.approx(reference_r2(a_r, mx, my, x[held], y[held]), abs=1e-9)
    full = next(r["r2"] for r in m.scores if r["rank"] == 30)
    assert m.r2 > full  # the full-rank fit overfits the noise; truncation helps on held-out texts
    # the recovered map is close to the planted one, and it maps vectors and activations as A does
    full_a, _, _ = reference_fit(x[train], y[train], rank=30)
    error = float((m.weight.double() - a_true).norm() / a_true.norm())
    assert error < 0.35 and error < 0.7 * float((full_a - a_true).norm() / a_true.norm())
    v = torch.randn(40, dtype=torch.float64)
    torch.testing.assert_close(m.map_vector(v).double(), ref @ v, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m(x[:5]).double(), (x[:5] - mx) @ ref.T + my, rtol=1e-4, atol=1e-4)


def test_fit_from_picks_the_planted_layer_pair():
    x, y, _ = planted(n=200, noise=0.2, seed=2)
    g = torch.Generator().manual_seed(5)
    xs = {0: torch.randn(200, 20, generator=g, dtype=torch.float64), 1: x,
          2: torch.randn(200, 20, generator=g, dtype=torch.float64)}
    ys = {0: torch.randn(200, 12, generator=g, dtype=torch.float64), 4: y}
    m = transfer.fit_from(xs, ys, ranks=[1, 3, 12], ridge=0.0)
    assert (m.source_layer, m.target_layer, m.rank) == (1, 4, 3)
    assert len(m.scores) == 3 * 2 * 3
    assert max(r["r2"] for r in m.scores if (r["source_layer"], r["target_layer"]) != (1, 4)) < 0.1 < m.r2


def test_default_target_layers_are_those_of_similar_depth():
    class Fake:
        def __init__(self, n):
            self.n_layers = n

    # source layer 14 of 30 sits at depth 15/30 = 0.5; target layer t of 18 at (t + 1)/18
    want = [t for t in range(18) if abs((t + 1) / 18 - 0.5) <= 0.2]
    assert transfer.depth_band(Fake(30), Fake(18), [14], band=0.2) == want == list(range(5, 12))
    assert transfer.depth_band(Fake(30), Fake(18), [0, 29], band=0.05) == [0, 17]


def test_split_keeps_each_text_whole():
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 4, 4])
    train, held = transfer.split_groups(groups, 0.4, 0)
    assert not set(groups[train].tolist()) & set(groups[held].tolist())
    assert len(set(groups[held].tolist())) == 2


def test_aligned_tokens_pair_tokens_ending_at_the_same_character():
    # "Hi there!" -> source "Hi"," there","!"  target <bos>,"Hi"," the","re","!"
    src = [(0, 2), (2, 8), (8, 9)]
    tgt = [(0, 0), (0, 2), (2, 6), (6, 8), (8, 9)]
    assert transfer.aligned_tokens(src, tgt) == [(1, 3), (2, 4)]  # the first token of each is skipped


def test_bad_input_is_one_clear_error():
    x, y, _ = planted()
    with pytest.raises(sl.SteerlabError, match="same number of rows"):
        transfer.fit_from({0: x}, {0: y[:10]})
    with pytest.raises(sl.SteerlabError, match="test="):
        transfer.fit_from({0: x}, {0: y}, test=1.5)
    m = transfer.fit_from({0: x}, {0: y}, ranks=[3])
    with pytest.raises(sl.SteerlabError, match="width"):
        m.map_vector(torch.zeros(5))
    with pytest.raises(sl.SteerlabError, match="source layer 0"):
        m.map(sl.Direction({2: torch.zeros(20)}))


def test_save_load_round_trip_and_refuses_to_overwrite(tmp_path):
    x, y, _ = planted()
    m = transfer.fit_from({2: x}, {5: y}, ranks=[3], meta={"note": "planted"})
    path = m.save(tmp_path / "m.transfer")
    back = transfer.load(path)
    torch.testing.assert_close(back.weight, m.weight)
    torch.testing.assert_close(back.source_mean, m.source_mean)
    assert (back.source_layer, back.target_layer, back.rank, back.r2) == (2, 5, 3, m.r2)
    assert back.meta["note"] == "planted" and back.scores == m.scores
    with pytest.raises(sl.SteerlabError, match="overwrite=True"):
        m.save(path)
    m.save(path, overwrite=True)
    (tmp_path / "other").mkdir()
    with pytest.raises(sl.SteerlabError, match="not a saved transfer map"):
        m.save(tmp_path / "other", overwrite=True)
    with pytest.raises(sl.SteerlabError, match="no transfer map"):
        transfer.load(tmp_path / "other")


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    return tiny_model("llama", seed=0), tiny_model("gemma3", seed=1, hidden_size=48)


def test_a_model_mapped_onto_itself_gives_the_identity():
    """Source = target: the best map is the same layer at full rank, R² ≈ 1, a direction maps onto itself."""
    model = tiny_model("llama", seed=3)
    texts = sl.data.prompts("neutral")
    m = transfer.fit(model, model, texts, source_layers=[1], target_layers="all", ranks=[8, 64], ridge=1e-6)
    assert (m.source_layer, m.target_layer, m.rank) == (1, 1, 64)
    assert m.r2 > 0.999
    pairs = sl.data.load("sentiment")
    d = sl.directions.mean_diff(model, pairs, layers=[1])
    mapped = m.map(d, target=model)
    assert torch.nn.functional.cosine_similarity(mapped[1], d[1], dim=0) > 0.999


def test_end_to_end_on_two_tiny_models_of_different_widths(pair, tmp_path):
    source, target = pair
    texts = sl.data.prompts("neutral")
    m = transfer.fit(source, target, texts, source_layers=[1], target_layers=[0, 2], ranks=[4, 16], per_text=6)
    assert (m.d_source, m.d_target) == (64, 48) and m.source_layer == 1 and m.target_layer in (0, 2)
    assert m.meta["source"]["d_model"] == 64 and m.meta["target"]["d_model"] == 48
    # the reference: the same samples captured by hand (byte tokenizers: every token after the first aligns)
    xs, ys, groups = transfer.paired_activations(source, target, texts, [1], [m.target_layer], per_text=6)
    acts_s = source.capture(texts[:3], layers=[1], positions="all")["layers.1.resid_post"]
    acts_t = target.capture(texts[:3], layers=[m.target_layer], positions="all")[f"layers.{m.target_layer}.resid_post"]
    first = groups == 0
    assert int(first.sum()) == min(6, len(acts_s[0]) - 1)
    assert torch.isclose(xs[1][first][-1], acts_s[0][-1], atol=1e-5).all()
    assert torch.isclose(ys[m.target_layer][first][-1], acts_t[0][-1], atol=1e-5).all()
    train, _ = transfer.split_groups(groups, 0.2, 0)
    solve, _, _ = transfer.least_squares(xs[1][train], ys[m.target_layer][train], ridge=1e-4)
    u, s, vh = torch.linalg.svd(solve)
    ref = u[:, :m.rank] @ torch.diag(s[:m.rank]) @ vh[:m.rank]
    torch.testing.assert_close(m.weight.double(), ref, rtol=1e-4, atol=1e-5)
    # a source direction becomes a target Direction that steers the target
    d = sl.directions.mean_diff(source, sl.data.load("sentiment"), layers=[1])
    mapped = m.map(d, target=target)
    assert mapped.layers == [m.target_layer] and mapped.d_model == 48
    assert mapped.meta["model"]["shape_hash"] == target.fingerprint["shape_hash"]
    torch.testing.assert_close(mapped[m.target_layer], (ref @ d[1].double()).float(), rtol=1e-4, atol=1e-5)
    prompts = ["Tell me a story.", "What is the weather?"]
    plain = target.logits(prompts)
    steered = target.logits(prompts, steering=sl.Steering([sl.Add(mapped, alpha=8.0, layers=mapped.layers)]))
    by_hand = target.logits(prompts, steering=sl.Steering([sl.Add(mapped[m.target_layer] * 8.0,
                                                                  layers=[m.target_layer])]))
    assert (steered - plain).abs().max() > 1e-2
    torch.testing.assert_close(steered, by_hand)
    # the other interventions take it too: ablation removes its component (checked on the captured site)
    lt = m.target_layer
    unit = mapped[lt] / mapped[lt].norm()
    clean = target.capture(prompts, layers=[lt], positions="last")[f"layers.{lt}.resid_post"]
    ablated = target.capture(prompts, layers=[lt], positions="last",
                             steering=sl.Steering([sl.Ablate(mapped, layers=[lt])]))[f"layers.{lt}.resid_post"]
    torch.testing.assert_close(ablated, clean - (clean @ unit)[:, None] * unit, rtol=1e-4, atol=1e-4)
    for other in (sl.Clamp(mapped, value=3.0, layers=[lt]), sl.Rotate(mapped, angle=0.5, layers=[lt])):
        assert (target.logits(prompts, steering=sl.Steering([other])) - plain).abs().max() > 1e-3
    # saved and loaded, the map maps the same; the mapped direction saves and loads for the target only
    back = transfer.load(m.save(tmp_path / "m.transfer"))
    torch.testing.assert_close(back.map(d)[m.target_layer], mapped[m.target_layer])
    mapped.save(tmp_path / "d.direction")
    sl.Direction.load(tmp_path / "d.direction", model=target)
    with pytest.raises(sl.SteerlabError, match="made for"):
        sl.Direction.load(tmp_path / "d.direction", model=source)
    with pytest.raises(sl.SteerlabError, match="map's target"):
        m.map(d, target=source)
    other = sl.directions.mean_diff(target, sl.data.load("sentiment"), layers=[1])
    with pytest.raises(sl.SteerlabError, match="source layer 1|map's source|width"):
        m.map(other)


# --- the command line -------------------------------------------------------------------------------
def test_cli_help_has_examples():
    from typer.testing import CliRunner

    from steerlab.cli import app

    for args in (["transfer", "--help"], ["transfer", "fit", "--help"], ["transfer", "map", "--help"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0 and "Example" in result.output and "steerlab transfer" in result.output


@pytest.mark.parametrize("args, message", [
    (["fit", "-s", "smollm2", "-t", "smollm2", "-o", "x"], "--texts FILE"),
    (["fit", "-s", "smollm2", "-t", "smollm2", "-o", "x", "--data", "sentiment", "--positions", "first"], "--positions"),
    (["fit", "-s", "smollm2", "-t", "smollm2", "-o", "x", "--data", "sentiment", "--ranks", "a,b"], "--ranks"),
    (["fit", "-s", "smollm2", "-t", "smollm2", "-o", "x", "--prompts", "nope"], "not a prompt set"),
    (["fit", "-s", "smollm2", "-t", "smollm2", "-o", "x", "--data", "sentiment", "--source-layers", "1-x"], "layer list"),
    (["map", "--map", "/no/such.transfer", "-d", "/no/d", "-o", "x"], "no transfer map"),
])
def test_cli_bad_input_is_one_line(args, message):
    from typer.testing import CliRunner

    from steerlab.cli import app

    result = CliRunner().invoke(app, ["transfer", *args])
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output


def test_cli_fit_then_map(pair, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from steerlab.cli import app, common

    source, target = pair
    monkeypatch.setattr(common, "check_model_args", lambda *a, **k: None)
    monkeypatch.setattr(common, "load_model", lambda name, *a, **k: {"src": source, "tgt": target}[name])
    runner = CliRunner()
    out = tmp_path / "m.transfer"
    args = ["transfer", "fit", "-s", "src", "-t", "tgt", "--prompts", "neutral", "--source-layers", "1",
            "--target-layers", "0,2", "--ranks", "4,16", "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    m = transfer.load(out)
    assert m.source_layer == 1 and m.target_layer in (0, 2) and m.rank in (4, 16) and "chosen:" in result.output
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.output
    d = sl.directions.mean_diff(source, sl.data.load("sentiment"), layers=[1])
    d.save(tmp_path / "d.direction")
    result = runner.invoke(app, ["transfer", "map", "--map", str(out), "-d", str(tmp_path / "d.direction"),
                                 "-o", str(tmp_path / "t.direction")])
    assert result.exit_code == 0, result.output
    mapped = sl.Direction.load(tmp_path / "t.direction", model=target)
    torch.testing.assert_close(mapped[m.target_layer], m.map_vector(d[1]))


def test_docs_python_block_runs_as_written(tmp_path, monkeypatch, smollm):
    """docs/transfer.md's example, on the embedded pair (SmolLM2 from the shared fixture, Gemma-3-270M loaded)."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "transfer.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(blocks) == 1
    real_load = sl.load
    monkeypatch.setattr(sl, "load", lambda name, *a, **k: smollm if name == "smollm2" else real_load(name, *a, **k))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(blocks[0], "docs/transfer.md", "exec"), scope)  # noqa: S102 -- running the docs is the test
    m = scope["m"]
    assert m.source_layer == 14 and m.d_source == 576 and m.d_target == 640 and m.rank in (16, 64, 256)
    assert scope["happy_gemma"].layers == [m.target_layer] and scope["happy_gemma"].d_model == 640
    assert isinstance(scope["out"].texts[0], str)
    assert transfer.load(tmp_path / "smollm-gemma.transfer").r2 == m.r2
