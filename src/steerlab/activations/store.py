"""Sharded on-disk activations: safetensors shards plus a JSON manifest.

Every shard is written to a temporary file and renamed into place, then the manifest is rewritten
the same way, so a crash leaves either a finished shard recorded in the manifest or nothing.
A capture restarted with the same texts, sites and positions skips the shards already recorded.
Reading memory-maps the shards: nothing is loaded until a site is asked for.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import DataError, SiteError
from .memory import Activations

FORMAT = "steerlab.activations/1"
MANIFEST = "manifest.json"


def texts_hash(texts: list[str]) -> str:
    """A short hash identifying a list of texts (order matters)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ShardWriter:
    """Writes one shard per batch and records it in the manifest; resumes a matching earlier run."""

    def __init__(self, folder: str | os.PathLike, *, sites: list[str], positions: str, n_texts: int,
                 key: dict, meta: dict | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / MANIFEST
        fresh = {"format": FORMAT, "sites": sites, "positions": positions, "n_texts": n_texts, "key": key,
                 "meta": meta or {}, "shards": [], "complete": False}
        self.manifest = fresh
        if self.path.exists():
            old = json.loads(self.path.read_text())
            same = all(old.get(k) == fresh[k] for k in ("format", "sites", "positions", "n_texts", "key"))
            if same:
                self.manifest = old
                self.manifest["shards"] = [s for s in old["shards"] if (self.folder / s["file"]).exists()]
            else:
                for s in old.get("shards", []):
                    (self.folder / s["file"]).unlink(missing_ok=True)
        _atomic_write_text(self.path, json.dumps(self.manifest, indent=1))

    @property
    def done(self) -> set[int]:
        """Batch numbers already on disk."""
        return {s["batch"] for s in self.manifest["shards"]}

    def write(self, batch: int, rows: list[int], tensors: dict[str, torch.Tensor]) -> None:
        """Write one batch's tensors (site name -> tensor) and record it."""
        name = f"shard-{batch:06d}.safetensors"
        tmp = self.folder / (name + ".tmp")
        payload = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        payload["__rows__"] = torch.tensor(rows, dtype=torch.long)
        save_file(payload, str(tmp))
        os.replace(tmp, self.folder / name)
        self.manifest["shards"].append({"batch": batch, "file": name, "n": len(rows)})
        _atomic_write_text(self.path, json.dumps(self.manifest, indent=1))

    def finish(self) -> DiskActivations:
        self.manifest["shards"].sort(key=lambda s: s["batch"])
        self.manifest["complete"] = True
        _atomic_write_text(self.path, json.dumps(self.manifest, indent=1))
        return DiskActivations(self.folder)


_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "BOOL": torch.bool, "U8": torch.uint8}


def mmap_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file as views on a memory map (pages load only when touched)."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    base = 8 + header_len
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        count = (end - begin) // torch.empty(0, dtype=dtype).element_size()
        flat = torch.frombuffer(mapped, dtype=dtype, count=count, offset=base + begin) if count else torch.empty(0, dtype=dtype)
        out[name] = flat.view(info["shape"])
    return out


class DiskActivations(Activations):
    """Activations read lazily from a sharded folder written by ``ShardWriter``."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.exists():
            raise DataError(f"no activations at {str(folder)!r} (expected {MANIFEST})")
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise DataError(f"{path} is not a steerlab activations manifest")
        if not self.manifest.get("complete"):
            raise DataError(f"activations at {str(folder)!r} are incomplete; run the capture again to resume it")
        self.positions = self.manifest["positions"]
        self.meta = self.manifest.get("meta", {})
        self._cache: dict[str, object] = {}
        self.data = _LazySites(self)

    def __len__(self) -> int:
        return int(self.manifest["n_texts"])

    def shards(self) -> Iterator[dict[str, torch.Tensor]]:
        """Each shard's memory-mapped tensors (``__rows__`` holds the texts' indices)."""
        for shard in self.manifest["shards"]:
            yield mmap_safetensors(self.folder / shard["file"])

    def load(self, name: str):
        if name not in self.manifest["sites"]:
            raise SiteError(f"site {name!r} was not captured; captured: {', '.join(self.manifest['sites'])}")
        if name in self._cache:
            return self._cache[name]
        parts, rows = [], []
        for shard in self.shards():
            rows.append(shard["__rows__"])
            if self.positions == "all":
                lengths = shard[f"{name}.__lengths__"].tolist()
                parts.extend(torch.split(shard[name], lengths))
            else:
                parts.append(shard[name])
        order = torch.cat(rows).argsort()
        if self.positions == "all":
            value = [parts[i] for i in order.tolist()]
        else:
            value = torch.cat(parts)[order]
        self._cache[name] = value
        return value


class _LazySites(dict):
    """A dict view over a DiskActivations' sites that loads a site on first access."""

    def __init__(self, owner: DiskActivations):
        super().__init__({name: None for name in owner.manifest["sites"]})
        self.owner = owner

    def __getitem__(self, name):
        if not dict.__contains__(self, name):
            raise KeyError(name)
        return self.owner.load(name)

    def values(self):
        return [self[name] for name in self]
