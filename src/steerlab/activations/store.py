"""Sharded on-disk activations: safetensors shards plus a JSON manifest that is checked, never trusted.

Every shard is written to a temporary file, fsynced and renamed into place, then the manifest is
rewritten the same way, so a crash leaves either a finished shard recorded in the manifest or nothing.
Each shard's entry records its bare file name, row count, size and sha256.
A capture restarted with the same key (texts, model weights, dtype, device kind and every setting
that changes the numbers) keeps the shards that still match their records and recomputes the rest;
a different capture into the same folder is refused unless ``overwrite=True``, which starts over.
A folder that is not a capture (no manifest) is never written into unless it is empty, and only
files named like shards are ever removed.
Reading memory-maps the shards: nothing is loaded until a site is asked for, and each shard's
size, header and rows are checked when it is opened (``verify()`` also checks every checksum).
"""

from __future__ import annotations

import json
import mmap
import os
import re
import struct
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .. import io
from ..errors import DataError, SiteError, SteerlabError
from ..io import texts_hash  # re-exported: captures are keyed by it
from .memory import POSITIONS, Activations, SiteValue

FORMAT = "steerlab.activations/1"
MANIFEST = "manifest.json"
SHARD_NAME = re.compile(r"shard-\d{6}\.safetensors")


__all__ = ["FORMAT", "MANIFEST", "DiskActivations", "ShardWriter", "mmap_safetensors", "texts_hash"]


class ShardWriter:
    """Writes one shard per batch and records it in the manifest; resumes a matching earlier run.

    ``total`` (the number of batches) only serves the "resuming: k of n shards done" line.
    ``overwrite=True`` starts over a folder that holds a different capture.
    """

    def __init__(self, folder: str | os.PathLike[str], *, sites: list[str], positions: str, n_texts: int,
                 key: dict[str, Any], meta: dict[str, Any] | None = None, overwrite: bool = False,
                 total: int | None = None):
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST
        check_folder(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        fresh: dict[str, Any] = {"format": FORMAT, "sites": sites, "positions": positions, "n_texts": n_texts,
                                 "key": key, "meta": meta or {}, "shards": [], "complete": False}
        self.manifest = fresh
        if self.path.exists():
            try:
                old: Any = io.read_json(self.path, "activations manifest")
            except DataError:
                if not overwrite:
                    raise
                old = None
            differ = [k for k in ("format", "sites", "positions", "n_texts", "key")
                      if not isinstance(old, dict) or old.get(k) != fresh[k]]
            if differ and not overwrite:
                raise SteerlabError(_mismatch(self.folder, old, fresh, differ))
            if not differ:
                kept = [s for s in old.get("shards", []) if _shard_ok(self.folder, s, n_texts, checksum=True)]
                self.manifest = {**old, "shards": kept, "complete": False}
                if kept:
                    print(f"resuming: {len(kept)} of {total if total is not None else '?'} shards done in "
                          f"{self.folder}", file=sys.stderr)
            recorded = {s.get("file") for s in self.manifest["shards"]}
            for file in self.folder.iterdir():  # stale shards of an old run, or ones that failed their check
                if SHARD_NAME.fullmatch(file.name) and file.name not in recorded and not file.is_dir():
                    file.unlink()
        io.write_json(self.path, self.manifest, indent=1)

    @property
    def done(self) -> set[int]:
        """Batch numbers already on disk."""
        return {s["batch"] for s in self.manifest["shards"]}

    def write(self, batch: int, rows: list[int], tensors: dict[str, torch.Tensor]) -> None:
        """Write one batch's tensors (site name -> tensor) and record it (row count, size, sha256)."""
        name = f"shard-{batch:06d}.safetensors"
        payload = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        payload["__rows__"] = torch.tensor(rows, dtype=torch.long)
        path = io.atomic_write(self.folder / name, lambda tmp: save_file(payload, str(tmp)))
        self.manifest["shards"].append({"batch": batch, "file": name, "n": len(rows),
                                        "bytes": path.stat().st_size, "sha256": io.file_hash(path, 64)})
        io.write_json(self.path, self.manifest, indent=1)

    def finish(self) -> DiskActivations:
        """Mark the capture complete and open it."""
        self.manifest["shards"].sort(key=lambda s: s["batch"])
        self.manifest["complete"] = True
        io.write_json(self.path, self.manifest, indent=1)
        return DiskActivations(self.folder)


def _mismatch(folder: Path, old: Any, fresh: dict[str, Any], differ: list[str]) -> str:
    """One line saying what differs between the capture in ``folder`` and the one asked for."""
    if "key" in differ and isinstance(old, dict) and isinstance(old.get("key"), dict):
        keys = sorted(set(old["key"]) | set(fresh["key"]))
        fields = [k for k in keys if old["key"].get(k) != fresh["key"].get(k)]
        differ = [d for d in differ if d != "key"] + fields
    return (f"out={str(folder)!r} holds another capture (different {', '.join(differ)}); "
            "appending would mix runs: give a new folder, or overwrite=True (--force) to start it over")


def _bare(name: object) -> bool:
    """Whether a manifest's shard ``file`` is a plain shard name inside the folder (no path, no traversal)."""
    return isinstance(name, str) and SHARD_NAME.fullmatch(name) is not None


def _shard_ok(folder: Path, shard: object, n_texts: int, checksum: bool) -> bool:
    """Whether a manifest entry names a shard file that matches its record (size, rows, optionally sha256)."""
    try:
        _check_shard(folder, shard, n_texts, checksum)
    except DataError:
        return False
    return True


def _check_shard(folder: Path, shard: object, n_texts: int, checksum: bool) -> dict[str, torch.Tensor]:
    """Open one recorded shard and check it against its manifest entry; ``DataError`` names what is wrong."""
    if not isinstance(shard, dict) or not _bare(shard.get("file")):
        raise DataError(f"{folder / MANIFEST} lists a shard {shard!r}; shard entries must name a file like "
                        "shard-000001.safetensors inside the folder")
    path = folder / shard["file"]
    if path.is_symlink() or not path.is_file():
        raise DataError(f"shard {path} is missing (or not a plain file); run the capture again to recompute it")
    size = path.stat().st_size
    if "bytes" in shard and shard["bytes"] != size:
        raise DataError(f"shard {path} has {size} bytes, the manifest records {shard['bytes']}; "
                        "run the capture again to recompute it")
    if checksum and "sha256" in shard and io.file_hash(path, 64) != shard["sha256"]:
        raise DataError(f"shard {path} fails its sha256 check; run the capture again to recompute it")
    tensors = mmap_safetensors(path)
    rows = tensors.get("__rows__")
    n = shard.get("n")
    if rows is None or rows.dim() != 1 or not isinstance(n, int) or rows.numel() != n:
        raise DataError(f"shard {path} holds {None if rows is None else rows.numel()} rows, "
                        f"the manifest records {n!r}; run the capture again to recompute it")
    if n and (int(rows.min()) < 0 or int(rows.max()) >= n_texts):
        raise DataError(f"shard {path} holds rows outside 0-{n_texts - 1}")
    return tensors


_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "BOOL": torch.bool, "U8": torch.uint8}


def check_folder(out: str | os.PathLike[str]) -> None:
    """Refuse to write a capture into a file, or into a non-empty folder that holds no capture manifest."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise SteerlabError(f"out={str(folder)!r} is a file; captures are written to a folder")
    if folder.is_dir() and not io.is_artifact(folder, MANIFEST, FORMAT) and any(folder.iterdir()):
        raise SteerlabError(f"out={str(folder)!r} is a folder that holds other files and no steerlab capture; "
                            "give an empty or new folder (steerlab never writes over other files)")


def mmap_safetensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file as views on a memory map (pages load only when touched).

    A truncated or malformed file raises ``DataError`` naming it (offsets are checked against the
    file's size before any view is made).
    """
    try:
        return _mmap_safetensors(Path(path))
    except DataError:
        raise
    except (OSError, ValueError, KeyError, TypeError, struct.error, RuntimeError, OverflowError) as err:
        raise DataError(f"{path} is not a readable safetensors file ({type(err).__name__}: {err})") from None


def _mmap_safetensors(path: Path) -> dict[str, torch.Tensor]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise DataError(f"{path} is truncated ({size} bytes); it is not a safetensors file")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8:
            raise DataError(f"{path} is truncated: its header claims {header_len} bytes, the file has {size}")
        header = json.loads(f.read(header_len))
        if not isinstance(header, dict):
            raise DataError(f"{path} has a malformed safetensors header")
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size > 0 else None
    base = 8 + header_len
    out: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or info.get("dtype") not in _DTYPES:
            raise DataError(f"{path}: tensor {name!r} has an unsupported entry {info!r}")
        dtype = _DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        shape = [int(s) for s in info["shape"]]
        width = torch.empty(0, dtype=dtype).element_size()
        count = 1
        for s in shape:
            if s < 0:
                raise DataError(f"{path}: tensor {name!r} has a negative dimension")
            count *= s
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= size - base
                and end - begin == count * width):
            raise DataError(f"{path} is truncated or corrupt: tensor {name!r} does not fit in the file")
        flat = (torch.frombuffer(mapped, dtype=dtype, count=count, offset=base + begin)
                if count and mapped is not None else torch.empty(0, dtype=dtype))
        out[name] = flat.view(shape)
    return out


class DiskActivations(Activations):
    """Activations read lazily from a sharded folder written by ``ShardWriter``.

    Opening checks the manifest (format, fields, bare shard names, every row present once) and each
    shard's size; reading a site checks each shard's header and rows; ``verify()`` checks checksums.
    """

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise DataError(f"no activations at {str(folder)!r} (expected {MANIFEST})")
        self.manifest: dict[str, Any] = _check_manifest(io.read_json(path, "activations manifest"), path)
        if not self.manifest.get("complete"):
            raise DataError(f"activations at {str(folder)!r} are incomplete; run the capture again to resume it")
        self.positions = self.manifest["positions"]
        self.meta = self.manifest.get("meta", {})
        for shard in self.manifest["shards"]:
            file = self.folder / shard["file"]
            if file.is_symlink() or not file.is_file():
                raise DataError(f"shard {file} is missing; run the capture again to recompute it")
            if "bytes" in shard and file.stat().st_size != shard["bytes"]:
                raise DataError(f"shard {file} has {file.stat().st_size} bytes, the manifest records "
                                f"{shard['bytes']}; run the capture again (with overwrite) to recompute it")
        self._cache: dict[str, SiteValue] = {}
        self.data: Mapping[str, SiteValue] = _LazySites(self)

    def __len__(self) -> int:
        return int(self.manifest["n_texts"])

    def shards(self) -> Iterator[dict[str, torch.Tensor]]:
        """Each shard's memory-mapped tensors (``__rows__`` holds the texts' indices), checked against the manifest."""
        for shard in self.manifest["shards"]:
            yield _check_shard(self.folder, shard, len(self), checksum=False)

    def verify(self) -> None:
        """Check every shard's size, sha256 and rows against the manifest; raise ``DataError`` on the first bad one."""
        for shard in self.manifest["shards"]:
            _check_shard(self.folder, shard, len(self), checksum=True)

    def load(self, name: str) -> SiteValue:
        """One captured site's values (read from the shards once, then cached)."""
        if name not in self.manifest["sites"]:
            raise SiteError(f"site {name!r} was not captured; captured: {', '.join(self.manifest['sites'])}")
        if name in self._cache:
            return self._cache[name]
        parts: list[torch.Tensor] = []
        rows: list[torch.Tensor] = []
        for shard, entry in zip(self.shards(), self.manifest["shards"]):
            where = self.folder / entry["file"]
            if name not in shard:
                raise DataError(f"shard {where} has no tensor for site {name!r}")
            n = shard["__rows__"].numel()
            rows.append(shard["__rows__"])
            if self.positions == "all":
                lengths_t = shard.get(f"{name}.__lengths__")
                if lengths_t is None or lengths_t.numel() != n or int(lengths_t.sum()) != shard[name].shape[0]:
                    raise DataError(f"shard {where}: the token counts of site {name!r} do not match its rows")
                parts.extend(torch.split(shard[name], lengths_t.tolist()))
            else:
                if shard[name].dim() == 0 or shard[name].shape[0] != n:
                    raise DataError(f"shard {where}: site {name!r} holds {tuple(shard[name].shape)}, not {n} rows")
                parts.append(shard[name])
        every = torch.cat(rows) if rows else torch.empty(0, dtype=torch.long)
        if not torch.equal(every.sort().values, torch.arange(len(self))):
            raise DataError(f"the shards in {self.folder} do not hold each of the {len(self)} texts exactly once")
        order = every.argsort()
        value: SiteValue
        if self.positions == "all":
            value = [parts[i] for i in order.tolist()]
        else:
            value = torch.cat(parts)[order]
        self._cache[name] = value
        return value


def _check_manifest(doc: Any, path: Path) -> dict[str, Any]:
    """The manifest if its fields have the right types and its shards are bare names; else ``DataError``."""
    def bad(what: str) -> DataError:
        return DataError(f"{path} is not a valid activations manifest: {what}")

    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise bad(f"format must be {FORMAT!r}")
    sites = doc.get("sites")
    if not isinstance(sites, list) or not all(isinstance(s, str) for s in sites):
        raise bad("'sites' must be a list of site names")
    if doc.get("positions") not in POSITIONS:
        raise bad(f"'positions' must be one of {', '.join(POSITIONS)}")
    n = doc.get("n_texts")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise bad("'n_texts' must be a count")
    shards = doc.get("shards")
    if not isinstance(shards, list):
        raise bad("'shards' must be a list")
    for shard in shards:
        if not isinstance(shard, dict) or not _bare(shard.get("file")):
            raise bad(f"shard entry {shard!r} must name a file like shard-000001.safetensors inside the folder")
        if not isinstance(shard.get("n"), int) or ("bytes" in shard and not isinstance(shard["bytes"], int)):
            raise bad(f"shard entry {shard!r} needs integer 'n' and 'bytes'")
    if sum(s["n"] for s in shards) != n and doc.get("complete"):
        raise bad(f"its shards hold {sum(s['n'] for s in shards)} rows, not the {n} texts it records")
    if not isinstance(doc.get("meta", {}), dict):
        raise bad("'meta' must be an object")
    return doc


class _LazySites(Mapping[str, SiteValue]):
    """A read-only mapping over a DiskActivations' sites that loads a site on first access."""

    def __init__(self, owner: DiskActivations):
        self.owner = owner
        self.names: list[str] = list(owner.manifest["sites"])

    def __getitem__(self, name: str) -> SiteValue:
        if name not in self.names:
            raise KeyError(name)
        return self.owner.load(name)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)
