"""SAELens's on-disk format: a folder with ``cfg.json`` and ``sae_weights.safetensors``.

``save`` writes what SAELens 6 writes (``SAE.load_from_disk`` reads it); ``load`` reads SAELens 6
folders and the older flat configs (``hook_point``, ``activation_fn_str``, ``log_threshold``).
TransformerLens hook names (``blocks.12.hook_resid_post``) map to steerlab sites (``layers.12.resid_post``);
the steerlab site is also kept in ``metadata.steerlab_site``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .. import io
from ..errors import DataError, SteerlabError
from ..sites import parse_site
from .model import ARCHITECTURES, SAE

CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
#: the SAELens version whose config layout ``save`` writes
SAELENS_VERSION = "6.0.0"

_TL_HOOKS = {"hook_resid_pre": "resid_pre", "hook_resid_mid": "resid_mid", "hook_resid_post": "resid_post",
             "hook_attn_out": "attn_out", "hook_mlp_out": "mlp_out", "mlp.hook_post": "mlp.neurons"}
_SITE_HOOKS = {v: k for k, v in _TL_HOOKS.items()}


def hook_name(site: str) -> str:
    """The TransformerLens hook name of a steerlab site (``layers.3.resid_post`` -> ``blocks.3.hook_resid_post``)."""
    s = parse_site(site)
    if s.layer is None or s.kind not in _SITE_HOOKS:
        raise DataError(f"site {site!r} has no TransformerLens hook name; SAEs are saved for layer sites "
                        f"({', '.join(_SITE_HOOKS)})")
    return f"blocks.{s.layer}.{_SITE_HOOKS[s.kind]}"


def site_of_hook(name: str) -> str | None:
    """The steerlab site of a TransformerLens or transformers hook name, or None if it has none."""
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    if m and m.group(2) in _TL_HOOKS:
        return f"layers.{m.group(1)}.{_TL_HOOKS[m.group(2)]}"
    m = re.fullmatch(r"(?:model\.)?layers\.(\d+)", name)  # a decoder layer's output is its resid_post
    if m:
        return f"layers.{m.group(1)}.resid_post"
    return None


def is_sae_folder(path: Path) -> bool:
    return path.is_dir() and (path / CFG).is_file() and (path / WEIGHTS).is_file()


def save(sae: SAE, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write ``sae`` as a SAELens folder; an existing path is replaced only with ``overwrite`` and only if it is
    an SAE folder."""
    metadata: dict[str, Any] = {"sae_lens_version": SAELENS_VERSION, "sae_lens_training_version": None,
                                "hook_name": hook_name(sae.site) if sae.site else None,
                                "hook_head_index": None, "prepend_bos": True, "steerlab_site": sae.site}
    model = sae.meta.get("model")
    if isinstance(model, dict):
        metadata["model_name"] = model.get("name")
    metadata["steerlab"] = json.loads(io.dumps(sae.meta, indent=None))
    cfg: dict[str, Any] = {"architecture": sae.architecture, "d_in": sae.d_in, "d_sae": sae.d_sae,
                           "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": sae.apply_b_dec_to_input,
                           "normalize_activations": "none", "reshape_activations": "none", "metadata": metadata}
    if sae.architecture == "topk":
        cfg["k"] = int(sae.k or 0)
        cfg["rescale_acts_by_decoder_norm"] = sae.rescale_acts_by_decoder_norm
    text = io.dumps(cfg)
    weights = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in sae.tensors().items()}

    def fill(tmp: Path) -> None:
        (tmp / CFG).write_text(text, encoding="utf-8")
        save_file(weights, str(tmp / WEIGHTS))

    return io.replace_folder(path, fill, ours=is_sae_folder, overwrite=overwrite, what="SAE")


def load(path: str | os.PathLike[str]) -> SAE:
    """Read a SAELens folder into an ``SAE`` (float32); configs steerlab cannot reproduce exactly raise ``DataError``."""
    folder = Path(path)
    if not (folder / CFG).is_file() or not (folder / WEIGHTS).is_file():
        raise DataError(f"no SAE at {str(path)!r} (expected a folder with {CFG} and {WEIGHTS})")
    cfg = io.read_json(folder / CFG, "SAE config")
    if not isinstance(cfg, dict):
        raise DataError(f"{folder / CFG} must hold a JSON object")
    raw_meta = cfg.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    arch = _architecture(cfg)
    norm = cfg.get("normalize_activations", "none")
    if norm not in ("none", False, None):
        raise DataError(f"{folder / CFG}: normalize_activations={norm!r} is not supported (steerlab reads SAEs "
                        "that take raw activations: 'none')")
    if cfg.get("reshape_activations", "none") not in ("none", None) or meta.get("hook_head_index") is not None:
        raise DataError(f"{folder / CFG}: per-head (hook_z) SAEs are not supported")
    tensors = io.read_safetensors(folder / WEIGHTS, f"SAE weights {str(folder)!r}")
    if "log_threshold" in tensors and "threshold" not in tensors:
        tensors["threshold"] = tensors.pop("log_threshold").exp()
    missing = [k for k in ("W_enc", "b_enc", "W_dec", "b_dec") if k not in tensors]
    if missing:
        raise DataError(f"{folder / WEIGHTS} lacks {missing}; a SAELens SAE holds W_enc, b_enc, W_dec and b_dec")
    hook = meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
    site = meta.get("steerlab_site") or (site_of_hook(hook) if isinstance(hook, str) else None)
    k = cfg.get("k")
    if k is None and isinstance(cfg.get("activation_fn_kwargs"), dict):
        k = cfg["activation_fn_kwargs"].get("k")
    raw_steerlab = meta.get("steerlab")
    steerlab_meta: dict[str, Any] = raw_steerlab if isinstance(raw_steerlab, dict) else {}
    info = {**steerlab_meta, "source": str(folder), "hook_name": hook}
    threshold = tensors.get("threshold")
    try:
        return SAE(tensors["W_enc"].float(), tensors["b_enc"].float(), tensors["W_dec"].float(),
                   tensors["b_dec"].float(), arch, site, None if k is None else int(k),
                   None if threshold is None else threshold.float(), bool(cfg.get("apply_b_dec_to_input", True)),
                   bool(cfg.get("rescale_acts_by_decoder_norm", False)), info)
    except SteerlabError as err:  # a shape or setting SAE refuses: name the folder
        raise DataError(f"SAE at {str(folder)!r}: {err}") from None


def _architecture(cfg: dict[str, Any]) -> str:
    arch = cfg.get("architecture")
    if arch is None:
        fn = cfg.get("activation_fn") or cfg.get("activation_fn_str") or "relu"
        arch = "topk" if fn == "topk" else "standard"
    if arch not in ARCHITECTURES:
        raise DataError(f"SAE architecture {arch!r} is not supported; steerlab reads {', '.join(ARCHITECTURES)}")
    return str(arch)
