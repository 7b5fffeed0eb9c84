"""Contrastive sets from the user's own data: JSONL and CSV files, lists of dicts, ``datasets`` objects.

Every loader reads two text fields per row, ``positive`` (the text that has the concept) and
``negative`` (the matched text that lacks it); the field names can be changed. Bad rows raise
``DataError`` naming the argument, where the problem is (file and line, or row) and what is allowed.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError
from .contrastive import ContrastiveSet

FILE_KINDS = (".jsonl", ".csv")


def from_records(records: Iterable[Mapping], positive: str = "positive", negative: str = "negative",
                 name: str | None = None) -> ContrastiveSet:
    """Build a set from dicts, one pair each: ``[{"positive": ..., "negative": ...}, ...]``.

    ``positive``/``negative`` name the fields to read, so any dict layout works.
    """
    if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Iterable):
        raise DataError(f"records must be a list of dicts, got {type(records).__name__}")
    rows = [(f"record {i}", r) for i, r in enumerate(records)]
    return _build(rows, positive, negative, name or "records", source="records", arg="records")


def from_jsonl(path: str | os.PathLike, positive: str = "positive", negative: str = "negative",
               name: str | None = None) -> ContrastiveSet:
    """Read a JSON Lines file, one object per line holding the two text fields; blank lines are skipped."""
    path = _existing_file(path)
    rows: list[tuple[str, object]] = []
    for lineno, line in enumerate(_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno} is not valid JSON ({err.msg}); each line must be one object"
                            ) from None
        except RecursionError:
            raise DataError(f"{path}:{lineno} is nested too deeply; each line must be one flat object") from None
        rows.append((f"{path}:{lineno}", obj))
    return _build(rows, positive, negative, name or path.stem, source=str(path), arg=f"path={str(path)!r}")


def from_csv(path: str | os.PathLike, positive: str = "positive", negative: str = "negative",
             name: str | None = None, delimiter: str = ",") -> ContrastiveSet:
    """Read a CSV file with a header row naming the columns; one pair per row (quoted fields may span lines)."""
    path = _existing_file(path)
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise DataError(f"delimiter={delimiter!r} must be one character")
    reader = csv.DictReader(io.StringIO(_text(path), newline=""), delimiter=delimiter)
    try:
        if reader.fieldnames is None:
            raise DataError(f"path={str(path)!r} is empty; a CSV file needs a header row and at least one row")
        # line_num is the reader's physical line after the row, which is right for one-line rows.
        rows = [(f"{path}:{reader.line_num}", row) for row in reader]
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num} is not valid CSV ({err})") from None
    if not rows:
        raise DataError(f"path={str(path)!r} has a header but no rows; it needs at least one pair")
    return _build(rows, positive, negative, name or path.stem, source=str(path), arg=f"path={str(path)!r}",
                  fields=reader.fieldnames)


def from_datasets(ds: Any, positive: str = "positive", negative: str = "negative",
                  name: str | None = None) -> ContrastiveSet:
    """Build a set from a Hugging Face ``datasets.Dataset`` (or anything shaped like one).

    Duck-typed, so ``datasets`` is not a dependency: an object with ``column_names`` whose
    ``ds[column]`` gives the column's values (a ``Dataset``), a pandas ``DataFrame``, a dict of
    columns, or an iterable of dicts (an ``IterableDataset``). Pick a split first for a ``DatasetDict``.
    """
    name = name or _dataset_name(ds)
    columns = getattr(ds, "column_names", None)
    if isinstance(columns, Mapping):
        raise DataError(f"ds is a dict of splits {sorted(columns)}; pass one split, e.g. ds[{next(iter(columns))!r}]")
    if columns is None and hasattr(ds, "columns") and hasattr(ds, "__getitem__"):
        columns = list(ds.columns)                                # a pandas DataFrame
    if columns is None and isinstance(ds, Mapping):
        columns = list(ds.keys())                                 # a dict of columns
    if columns is not None and hasattr(ds, "__getitem__"):
        columns = list(columns)
        for arg, col in (("positive", positive), ("negative", negative)):
            if col not in columns:
                raise DataError(f"{arg}={col!r} is not a column of ds; its columns are {columns}")
        pos, neg = ds[positive], ds[negative]
        if isinstance(pos, str) or isinstance(neg, str):
            raise DataError("ds looks like a single record (its fields hold strings, not columns); "
                            "pass a list of records, or use from_records")
        pos, neg = list(pos), list(neg)
        if len(pos) != len(neg):
            raise DataError(f"columns positive={positive!r} and negative={negative!r} have unequal lengths "
                            f"({len(pos)} and {len(neg)}); every row needs both texts")
        rows = [(f"row {i}", {positive: p, negative: n}) for i, (p, n) in enumerate(zip(pos, neg))]
        return _build(rows, positive, negative, name, source="datasets", arg="ds")
    if isinstance(ds, Iterable) and not isinstance(ds, (str, bytes)):
        rows = [(f"row {i}", r) for i, r in enumerate(ds)]
        return _build(rows, positive, negative, name, source="datasets", arg="ds")
    raise DataError(f"ds must be a datasets.Dataset, a DataFrame, a dict of columns or an iterable of dicts, "
                    f"got {type(ds).__name__}")


def from_file(path: str | os.PathLike, positive: str = "positive", negative: str = "negative",
              name: str | None = None) -> ContrastiveSet:
    """Read a ``.jsonl`` or ``.csv`` file, chosen by its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        return from_jsonl(path, positive=positive, negative=negative, name=name)
    if suffix == ".csv":
        return from_csv(path, positive=positive, negative=negative, name=name)
    raise DataError(f"path={str(path)!r} has suffix {suffix!r}; data files must be one of {list(FILE_KINDS)}")


def _build(rows: Sequence[tuple[str, object]], positive: str, negative: str, name: str, source: str, arg: str,
           fields: Sequence[str] | None = None) -> ContrastiveSet:
    """Check every row and pull out its two texts.

    ``rows`` holds (where, row) pairs so errors can point at the line or row; ``arg`` names the input
    for the empty-input error; ``fields`` lists a CSV header for the missing-field error.
    """
    for field_arg, col in (("positive", positive), ("negative", negative)):
        if not isinstance(col, str) or not col:
            raise DataError(f"{field_arg}={col!r} must be the name of a field (a non-empty string)")
    if not rows:
        raise DataError(f"{arg} holds no rows; a contrastive set needs at least one pair")
    pos: list[str] = []
    neg: list[str] = []
    for where, row in rows:
        if not isinstance(row, Mapping):
            raise DataError(f"{where} is a {type(row).__name__}, not an object with fields "
                            f"{positive!r} and {negative!r}")
        for field_arg, col, out in (("positive", positive, pos), ("negative", negative, neg)):
            if col not in row:
                have = list(fields) if fields is not None else list(row.keys())
                raise DataError(f"{field_arg}={col!r} is not a field of {where}; fields there: {have}")
            value = row[col]
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{where}: field {col!r} ({field_arg}) must be a non-empty string, got {value!r}")
            out.append(value)
    meta = {"source": source, "positive_field": positive, "negative_field": negative}
    return ContrastiveSet(pos, neg, name=name, meta=meta)


def _existing_file(path: object) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"path must be a file path, got {type(path).__name__}")
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "does not exist"
        raise DataError(f"path={str(path)!r} {what}")
    if p.stat().st_size == 0:
        raise DataError(f"path={str(path)!r} is empty; it needs at least one pair")
    return p


def _text(path: Path) -> str:
    """A data file's text (UTF-8, a byte-order mark allowed); other encodings raise ``DataError``."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"path={str(path)!r} is not UTF-8 text (bad byte at offset {err.start}); "
                        "save it as UTF-8") from None


def _dataset_name(ds: object) -> str:
    info = getattr(ds, "info", None)
    return getattr(info, "dataset_name", None) or "dataset"
