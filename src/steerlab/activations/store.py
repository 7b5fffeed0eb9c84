"""Sharded on-disk activations: safetensors shards plus a JSON manifest.

Every shard is written to a temporary file and renamed into place, then the manifest is rewritten
the same way, so a crash leaves either a finished shard recorded in the manifest or nothing.
A capture restarted with the same texts, sites and positions skips the shards already recorded;
a different capture into the same folder starts it over. A folder that is not a capture (no
manifest) is never written into unless it is empty.
Reading memory-maps the shards: nothing is loaded until a site is asked for.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .. import io
from ..errors import DataError, SiteError, SteerlabError
from ..io import texts_hash  # re-exported: captures are keyed by it
from .memory import Activations, SiteValue

FORMAT = "steerlab.activations/1"
MANIFEST = "manifest.json"


__all__ = ["FORMAT", "MANIFEST", "DiskActivations", "ShardWriter", "mmap_safetensors", "texts_hash"]


class ShardWriter:
    """Writes one shard per batch and records it in the manifest; resumes a matching earlier run."""

    def __init__(self, folder: str | os.PathLike[str], *, sites: list[str], positions: str, n_texts: int,
                 key: dict[str, Any], meta: dict[str, Any] | None = None):
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST
        _check_folder(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        fresh: dict[str, Any] = {"format": FORMAT, "sites": sites, "positions": positions, "n_texts": n_texts, "key": key,
                 "meta": meta or {}, "shards": [], "complete": False}
        self.manifest = fresh
        if self.path.exists():
            old = io.read_json(self.path, "activations manifest")
            same = all(old.get(k) == fresh[k] for k in ("format", "sites", "positions", "n_texts", "key"))
            if same:
                self.manifest = old
                self.manifest["shards"] = [s for s in old["shards"] if (self.folder / s["file"]).exists()]
            else:
                for s in old.get("shards", []):
                    (self.folder / s["file"]).unlink(missing_ok=True)
        io.write_json(self.path, self.manifest, indent=1)

    @property
    def done(self) -> set[int]:
        """Batch numbers already on disk."""
        return {s["batch"] for s in self.manifest["shards"]}

    def write(self, batch: int, rows: list[int], tensors: dict[str, torch.Tensor]) -> None:
        """Write one batch's tensors (site name -> tensor) and record it."""
        name = f"shard-{batch:06d}.safetensors"
        payload = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        payload["__rows__"] = torch.tensor(rows, dtype=torch.long)
        io.atomic_write(self.folder / name, lambda tmp: save_file(payload, str(tmp)))
        self.manifest["shards"].append({"batch": batch, "file": name, "n": len(rows)})
        io.write_json(self.path, self.manifest, indent=1)

    def finish(self) -> DiskActivations:
        """Mark the capture complete and open it."""
        self.manifest["shards"].sort(key=lambda s: s["batch"])
        self.manifest["complete"] = True
        io.write_json(self.path, self.manifest, indent=1)
        return DiskActivations(self.folder)


_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "BOOL": torch.bool, "U8": torch.uint8}


def _check_folder(folder: Path) -> None:
    """Refuse to write a capture into a file, or into a non-empty folder that holds no capture manifest."""
    if folder.exists() and not folder.is_dir():
        raise SteerlabError(f"out={str(folder)!r} is a file; captures are written to a folder")
    if folder.is_dir() and not io.is_artifact(folder, MANIFEST, FORMAT) and any(folder.iterdir()):
        raise SteerlabError(f"out={str(folder)!r} is a folder that holds other files and no steerlab capture; "
                            "give an empty or new folder (steerlab never writes over other files)")


def mmap_safetensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file as views on a memory map (pages load only when touched)."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    base = 8 + header_len
    out: dict[str, torch.Tensor] = {}
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

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.exists():
            raise DataError(f"no activations at {str(folder)!r} (expected {MANIFEST})")
        self.manifest: dict[str, Any] = io.read_json(path, "activations manifest")
        if self.manifest.get("format") != FORMAT:
            raise DataError(f"{path} is not a steerlab activations manifest")
        if not self.manifest.get("complete"):
            raise DataError(f"activations at {str(folder)!r} are incomplete; run the capture again to resume it")
        self.positions = self.manifest["positions"]
        self.meta = self.manifest.get("meta", {})
        self._cache: dict[str, SiteValue] = {}
        self.data: Mapping[str, SiteValue] = _LazySites(self)

    def __len__(self) -> int:
        return int(self.manifest["n_texts"])

    def shards(self) -> Iterator[dict[str, torch.Tensor]]:
        """Each shard's memory-mapped tensors (``__rows__`` holds the texts' indices)."""
        for shard in self.manifest["shards"]:
            yield mmap_safetensors(self.folder / shard["file"])

    def load(self, name: str) -> SiteValue:
        """One captured site's values (read from the shards once, then cached)."""
        if name not in self.manifest["sites"]:
            raise SiteError(f"site {name!r} was not captured; captured: {', '.join(self.manifest['sites'])}")
        if name in self._cache:
            return self._cache[name]
        parts: list[torch.Tensor] = []
        rows: list[torch.Tensor] = []
        for shard in self.shards():
            rows.append(shard["__rows__"])
            if self.positions == "all":
                lengths = shard[f"{name}.__lengths__"].tolist()
                parts.extend(torch.split(shard[name], lengths))
            else:
                parts.append(shard[name])
        order = torch.cat(rows).argsort()
        value: SiteValue
        if self.positions == "all":
            value = [parts[i] for i in order.tolist()]
        else:
            value = torch.cat(parts)[order]
        self._cache[name] = value
        return value


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
