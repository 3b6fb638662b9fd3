"""Reading and writing JSON-lines files (gzipped or not), with errors that name the file, the line and the field."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from typing import Any


PathLike = str | os.PathLike


def open_text(path: PathLike, mode: str):
    """Open a text file, gzipped when its name ends with `.gz`."""
    opener = gzip.open if str(path).endswith(".gz") else open
    return opener(path, mode + "t", encoding="utf-8")


def iter_jsonl(path: PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield `(line_number, record)` for the non-blank lines of a jsonl file; malformed lines raise `ValueError`."""
    with open_text(path, "r") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {line_number}: not valid JSON ({error.msg})") from error
            if not isinstance(record, dict):
                raise ValueError(f"{path}, line {line_number}: expected a JSON object, got {type(record).__name__}")
            yield line_number, record


def as_files(data_files: PathLike | list[PathLike]) -> list[PathLike]:
    """One path or a list of paths, as a list."""
    return [data_files] if isinstance(data_files, (str, os.PathLike)) else list(data_files)
