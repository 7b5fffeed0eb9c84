"""The shared inputs of every benchmark: prompts, steering vectors and recipes, made from a seed.

Peers' scripts rebuild the same prompts and vectors from ``benchmarks/results/inputs-*.json`` /
``.safetensors`` files written here, so every library steers with the same numbers.
"""

from __future__ import annotations

import torch

GEN_PROMPTS = [
    "Tell me about your day.",
    "Write a short poem about the sea.",
    "What is the capital of France?",
    "Give me three tips for learning to cook.",
    "Explain what a neural network is to a child.",
    "Describe your favourite season and why.",
    "How do I make a cup of tea?",
    "Summarise the plot of a fairy tale you like.",
]

_SUBJECTS = ["the weather", "a cat", "the market", "a train", "music", "the ocean", "a library", "coffee",
             "football", "the moon", "a garden", "history", "bread", "mountains", "a river", "computers"]
_TEMPLATES = ["I think {} is", "Yesterday {} was", "Tell me about {}.", "Everyone says {} can be",
              "My opinion on {} changed when", "Here is a fact about {}:"]


def capture_texts(n: int) -> list[str]:
    """``n`` short varied texts (deterministic), for capture benchmarks."""
    out = []
    for i in range(n):
        subject = _SUBJECTS[i % len(_SUBJECTS)]
        template = _TEMPLATES[(i // len(_SUBJECTS)) % len(_TEMPLATES)]
        tail = " and".join([""] + ["then more"] * (i % 5)) if i % 5 else ""
        out.append(template.format(subject) + tail + f" (#{i})")
    return out


def vectors(n_layers: int, d_model: int, seed: int = 0, count: int = 8) -> torch.Tensor:
    """``[count, n_layers, d_model]`` unit random vectors (one per recipe and layer)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(count, n_layers, d_model, generator=g)
    return v / v.norm(dim=-1, keepdim=True)


def recipes(sl, n_layers: int, d_model: int, seed: int = 0) -> dict:
    """Named steering recipes used by the generation benchmarks (steerlab objects)."""
    v = vectors(n_layers, d_model, seed)
    layers = list(range(n_layers))

    def per_layer(k):
        return {layer: v[k, layer] for layer in layers}

    def ablate_everywhere(k):
        d = v[k, n_layers // 2]
        return [sl.Ablate(d, site="embed"), sl.Ablate(d, site="attn_out", layers=layers),
                sl.Ablate(d, site="mlp_out", layers=layers)]

    mixed = [
        sl.Steering([sl.Add(per_layer(0), alpha=2.0, layers=layers)]),
        sl.Steering([sl.Add(per_layer(1), alpha=-3.0, layers=layers)]),
        sl.Steering([sl.Rotate(per_layer(2), angle=10.0, layers=layers)]),
        sl.Steering([sl.Rotate(per_layer(3), angle=-15.0, layers=layers)]),
        sl.Steering(ablate_everywhere(4)),
        sl.Steering(ablate_everywhere(5)),
        sl.Steering([sl.Add(per_layer(6), alpha=1.0, layers=layers)] + ablate_everywhere(6)),
        sl.Steering([sl.Add(per_layer(7), alpha=4.0, layers=layers)]),
    ]
    return {
        "add": sl.Steering([sl.Add(per_layer(0), alpha=2.0, layers=layers)]),
        "rotate": sl.Steering([sl.Rotate(per_layer(0), angle=10.0, layers=layers, mode="relative")]),
        "ablate": sl.Steering(ablate_everywhere(0)),
        "mixed8": mixed,
    }
