"""SAE training on a capture store (streaming, resumable), its metrics against plain torch, the loss splice,
top texts and feature ranking."""

from __future__ import annotations

import pytest
import torch

from steerlab.errors import SteerlabError
from steerlab.sae import SAE
from steerlab.sae.features import contrast_features, top_texts
from steerlab.sae.metrics import loss_increase, reconstruction_metrics
from steerlab.sae.train import train_sae
from tiny import tiny_model

SITE = "layers.1.resid_post"
TEXTS = [f"text number {i}: " + "abcdefghij"[i % 10] * (3 + i % 7) + " and more words here" for i in range(40)]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def store(model, tmp_path_factory):
    return model.capture(TEXTS, sites=SITE, positions="all", out=tmp_path_factory.mktemp("acts") / "s",
                         batch_size=8, progress=False)


SMALL = {"d_sae": 48, "k": 4, "batch_size": 64, "chunk_rows": 64, "epochs": 2, "lr": 3e-3, "dead_after": 500,
         "aux_k": 8}


def test_training_lowers_the_error_and_resumes_exactly(store, tmp_path):
    straight = train_sae(store, SITE, log_every=5, progress=False, **SMALL)
    h = straight.history
    assert h[-1]["mse"] < h[0]["mse"] and straight.steps > 10
    assert straight.sae.site == SITE and straight.sae.architecture == "topk" and straight.sae.k == 4
    ckpt = tmp_path / "ckpt"
    part = train_sae(store, SITE, checkpoint=ckpt, max_steps=7, progress=False, **SMALL)
    assert part.steps == 7
    rest = train_sae(store, SITE, checkpoint=ckpt, progress=False, **SMALL)
    assert rest.steps == straight.steps
    torch.testing.assert_close(rest.sae.W_enc, straight.sae.W_enc, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rest.sae.W_dec, straight.sae.W_dec, rtol=1e-4, atol=1e-5)
    with pytest.raises(SteerlabError, match="another training run"):
        train_sae(store, SITE, checkpoint=ckpt, progress=False, **{**SMALL, "k": 5})


def test_standard_relu_training_and_bad_settings(store):
    relu = train_sae(store, SITE, progress=False, **{**SMALL, "architecture": "standard", "l1_coefficient": 0.01})
    assert relu.sae.architecture == "standard" and relu.history == [] or relu.steps > 0
    with pytest.raises(SteerlabError, match="cannot be trained"):
        train_sae(store, SITE, architecture="jumprelu")
    with pytest.raises(SteerlabError, match="unknown settings"):
        train_sae(store, SITE, d_hidden=3)
    with pytest.raises(SteerlabError, match="not in the store"):
        train_sae(store, "layers.0.resid_post")


def test_metrics_match_plain_torch(store):
    sae = train_sae(store, SITE, progress=False, **{**SMALL, "epochs": 1}).sae
    got = reconstruction_metrics(sae, store, outlier_ratio=None)
    x = torch.cat([t[1:] for t in store[SITE]]).double()  # every text's tokens after the first
    f = sae.encode(x.float()).double()
    err = x - (f @ sae.W_dec.double() + sae.b_dec.double())
    assert got["rows"] == x.shape[0]
    assert got["mse"] == pytest.approx(float(err.pow(2).sum(-1).mean()), rel=1e-4)
    ev = 1 - err.pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert got["explained_variance"] == pytest.approx(float(ev), rel=1e-4, abs=1e-6)
    assert got["l0"] == pytest.approx(float((f > 0).sum(-1).double().mean()))
    assert got["dead_fraction"] == pytest.approx(float((~(f > 0).any(0)).double().mean()))


def exact_sae(d: int) -> SAE:
    """ReLU(x) - ReLU(-x) = x: a standard SAE that reconstructs every input exactly."""
    eye = torch.eye(d)
    return SAE(torch.cat([eye, -eye], 1), torch.zeros(2 * d), torch.cat([eye, -eye], 0), torch.zeros(d),
               "standard", SITE)


def test_loss_splice(model):
    texts = TEXTS[:6]
    exact = loss_increase(model, exact_sae(model.d_model), texts, batch_size=4, progress=False)
    # reference for the clean loss: plain transformers, one text at a time, predictions from position 1 on
    total, count = 0.0, 0
    for t in texts:
        ids = model.tokenizer(t, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model.hf_model(input_ids=ids).logits[0]
        nll = torch.nn.functional.cross_entropy(logits[1:-1], ids[0, 2:], reduction="sum")
        total, count = total + float(nll), count + ids.shape[1] - 2
    assert exact["tokens"] == count
    assert exact["clean"] == pytest.approx(total / count, rel=1e-5)
    assert exact["sae"] == pytest.approx(exact["clean"], abs=1e-5) and exact["increase"] == pytest.approx(0, abs=1e-5)
    assert exact["zero"] > exact["clean"] and exact["recovered"] == pytest.approx(1.0, abs=1e-4)
    lossy = SAE(torch.eye(model.d_model), torch.zeros(model.d_model), torch.eye(model.d_model),
                torch.zeros(model.d_model), "standard", SITE)  # ReLU(x): loses the negative half
    assert abs(loss_increase(model, lossy, texts, progress=False)["increase"]) > 1e-3  # a random model: either way


def test_top_texts_and_contrast(model):
    sae = exact_sae(model.d_model)
    texts = TEXTS[:10]
    top = top_texts(model, sae, texts, features=[0, 3], k=3, progress=False)
    acts = model.capture(texts, sites=SITE, positions="all")[SITE]
    peaks = torch.stack([t[1:, 0].clamp_min(0).max() for t in acts])
    want = peaks.argsort(descending=True)[:3]
    assert [r["text"] for r in top[0]] == [texts[i] for i in want.tolist()]
    assert top[0][0]["activation"] == pytest.approx(float(peaks.max()), rel=1e-5)
    ranked = contrast_features(model, sae, texts[:5], texts[5:])
    assert len(ranked) == sae.d_sae and ranked[0][1] >= ranked[-1][1]
    with pytest.raises(SteerlabError, match="out of range"):
        top_texts(model, sae, texts, features=[10_000])


def test_loss_splice_touches_every_token_but_the_first(model):
    """The spliced loss equals a hand-written hook that replaces positions 1.. of each (unpadded) text."""
    texts = TEXTS[:5]  # different lengths: the batch is padded
    d = model.d_model
    lossy = SAE(torch.eye(d), torch.zeros(d), torch.eye(d), torch.zeros(d), "standard", SITE)
    got = loss_increase(model, lossy, texts, batch_size=3, progress=False)

    def hook(module, args, output):
        x = output[0] if isinstance(output, tuple) else output
        x = torch.cat([x[:, :1], x[:, 1:].clamp_min(0)], 1)
        return (x, *output[1:]) if isinstance(output, tuple) else x

    total, count = 0.0, 0
    handle = model.hf_model.model.layers[1].register_forward_hook(hook)
    try:
        for t in texts:
            ids = model.tokenizer(t, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                logits = model.hf_model(input_ids=ids).logits[0]
            total += float(torch.nn.functional.cross_entropy(logits[1:-1], ids[0, 2:], reduction="sum"))
            count += ids.shape[1] - 2
    finally:
        handle.remove()
    assert got["sae"] == pytest.approx(total / count, rel=1e-5)
