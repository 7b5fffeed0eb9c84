"""Files steerlab writes: atomic writes, JSON, artifact folders that never clobber user data, and short hashes.

Every write goes to a temporary file beside its target, is flushed to disk and then renamed over
the target, so a crash leaves either the old file or the new one, never half of one. An artifact
folder (a saved direction, recipe or capture) is built beside its target the same way and only
ever replaces a folder that is a steerlab artifact of the same kind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from .errors import DataError, SteerlabError

PathLike = str | os.PathLike[str]


# --- atomic files ------------------------------------------------------------------------------
def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, fsync it and rename it over ``path``.

    The temporary file is ``<name>.tmp`` (a rerun after a crash overwrites it); it is removed if
    ``write`` fails.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


# --- JSON --------------------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """``json.dumps``'s ``default``: tensors and numpy values become lists or numbers, sets and tuples lists."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple, range)):
        return list(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps(obj: Any, indent: int | None = 2) -> str:
    """``obj`` as JSON text (tensors, numpy values, sets and tuples allowed)."""
    return json.dumps(obj, indent=indent, default=jsonable)


def write_json(path: PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically."""
    return atomic_write_text(path, dumps(obj, indent))


def read_json(path: PathLike, what: str = "JSON file") -> Any:
    """Parse the JSON file at ``path``; a missing or malformed file raises ``DataError`` naming ``what``."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"no {what} at {str(file)!r}")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise DataError(f"{file} is not valid JSON: {str(err)[:160]}") from None


# --- tensors read back ---------------------------------------------------------------------------
MAX_MAGNITUDE = 1e6  # larger values in a saved vector or setting are a corrupt or hand-edited file


def read_safetensors(path: PathLike, what: str) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a missing, truncated or malformed file raises ``DataError`` naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(path)
    if not file.is_file():
        raise DataError(f"{what}: {str(file)!r} is missing")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise DataError(f"{what}: {file} is not a readable safetensors file ({str(err).splitlines()[0][:120]})"
                        ) from None


def check_finite(values: torch.Tensor, what: str, limit: float = MAX_MAGNITUDE) -> torch.Tensor:
    """``values`` if every entry is a finite number no larger than ``limit`` in size; else ``DataError``."""
    if (values.is_floating_point() or values.is_complex()) and not bool(torch.isfinite(values).all()):
        raise DataError(f"{what} holds NaN or infinite values")
    if values.numel() and float(values.abs().max()) > limit:
        raise DataError(f"{what} holds a value of size {float(values.abs().max()):.3g}, above the {limit:g} allowed")
    return values


def check_numbers(value: Any, what: str, limit: float = MAX_MAGNITUDE) -> None:
    """Every number inside ``value`` (nested dicts and lists) is finite and no larger than ``limit``."""
    import math

    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or abs(value) > limit:
            raise DataError(f"{what} holds {value!r}; numbers must be finite and at most {limit:g} in size")
    elif isinstance(value, dict):
        for k, v in value.items():
            check_numbers(v, f"{what}.{k}", limit)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_numbers(v, f"{what}[{i}]", limit)


# --- artifact folders --------------------------------------------------------------------------
def is_artifact(folder: PathLike, marker: str, format: str) -> bool:
    """Whether ``folder`` holds a steerlab artifact: a ``marker`` JSON file whose ``format`` is ``format``."""
    file = Path(folder) / marker
    if not file.is_file():
        return False
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and doc.get("format") == format


def read_artifact(path: PathLike, marker: str, format: str, what: str) -> tuple[Path, dict[str, Any]]:
    """The folder and ``marker`` document of a saved ``what``; one ``DataError`` when it is not one."""
    folder = Path(path)
    if not (folder / marker).is_file():
        raise DataError(f"no {what} at {str(path)!r} (expected a folder with {marker})")
    doc = read_json(folder / marker, what)
    if not isinstance(doc, dict) or doc.get("format") != format:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise DataError(f"{folder} is not a steerlab {what} (format {found!r})")
    return folder, doc


def check_target(folder: PathLike, marker: str, format: str, overwrite: bool, what: str) -> None:
    """Refuse to save over ``folder`` unless it is absent, or ``overwrite`` is set and it is a ``what`` artifact."""
    check_owned(folder, lambda p: is_artifact(p, marker, format), overwrite, what)


def check_owned(target: PathLike, ours: Callable[[Path], bool], overwrite: bool, what: str,
                flag: str = "overwrite=True") -> None:
    """Refuse to write over ``target`` unless it is absent, or ``overwrite`` is set and ``ours(target)`` holds.

    ``what`` names the kind of output (in the message); ``flag`` how the caller asks to replace it.
    """
    path = Path(target)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not ours(path):
        raise SteerlabError(f"{str(path)!r} already exists and is not a saved {what}; "
                            "choose another path (steerlab never replaces other files)")
    if not overwrite:
        raise SteerlabError(f"{str(path)!r} already holds a saved {what}; pass {flag} to replace it")


def save_folder(folder: PathLike, fill: Callable[[Path], object], *, marker: str, format: str, overwrite: bool,
                what: str) -> Path:
    """Write an artifact folder: ``fill(tmp)`` builds it beside ``folder``, then it is renamed into place.

    An existing ``folder`` is replaced only with ``overwrite=True`` and only if it is an artifact of
    the same kind (``marker`` file with this ``format``); the old one is moved aside first and
    removed once the new one is in place.
    """
    return replace_folder(folder, fill, ours=lambda p: p.is_dir() and is_artifact(p, marker, format),
                          overwrite=overwrite, what=what)


def replace_folder(folder: PathLike, fill: Callable[[Path], object], *, ours: Callable[[Path], bool],
                   overwrite: bool, what: str, flag: str = "overwrite=True") -> Path:
    """``save_folder`` with any test of ownership: ``ours(path)`` says whether an existing folder may be replaced."""
    target = Path(folder)
    check_owned(target, ours, overwrite, what, flag)
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = target.with_name(f".{target.name}.{tag}.tmp")
    old = target.with_name(f".{target.name}.{tag}.old")
    tmp.mkdir()
    try:
        fill(tmp)
        for file in tmp.rglob("*"):
            if file.is_file():
                _fsync_file(file)
        _fsync_dir(tmp)
        if target.exists():
            check_owned(target, ours, overwrite, what, flag)  # still ours, just before the swap
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise
    _fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old)
    return target


def write_file(path: PathLike, write: Callable[[Path], object], *, ours: Callable[[Path], bool], overwrite: bool,
               what: str, flag: str = "overwrite=True") -> Path:
    """``atomic_write`` that refuses an existing ``path`` unless ``overwrite`` and ``ours(path)`` (a file of that kind)."""
    check_owned(path, lambda p: p.is_file() and ours(p), overwrite, what, flag)
    return atomic_write(path, write)


# --- hashes ------------------------------------------------------------------------------------
def short_hash(parts: Iterable[bytes], length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 of ``parts`` fed in order."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()[:length]


def texts_hash(texts: Iterable[str]) -> str:
    """A short hash identifying a list of texts (order matters)."""
    return short_hash(t.encode("utf-8") + b"\0" for t in texts)


def tensor_hash(tensors: dict[str, torch.Tensor], length: int = 16) -> str:
    """A short hash of named tensors' float32 values (names sorted; device and dtype do not matter)."""
    def parts() -> Iterable[bytes]:
        for name, t in sorted(tensors.items()):
            yield name.encode()
            yield t.detach().float().cpu().contiguous().numpy().tobytes()

    return short_hash(parts(), length)


def file_hash(path: PathLike, length: int = 16, chunk: int = 1 << 20) -> str:
    """A short sha256 of a file's bytes, read in chunks."""
    def parts() -> Iterable[bytes]:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                yield block

    return short_hash(parts(), length)
