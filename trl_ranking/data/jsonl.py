"""Reading JSON-lines files (gzipped or not, local or `hf://`) line by line, with errors that name the file and the
line; writing them."""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterator
from typing import Any


PathLike = str | os.PathLike


def open_text(path: PathLike, mode: str):
    """Open a text file, gzipped when its name ends with `.gz`."""
    opener = gzip.open if str(path).endswith(".gz") else open
    return opener(path, mode + "t", encoding="utf-8")


def _open_binary(path: PathLike):
    """A local file, or a remote one (`hf://...`, any fsspec URL) through fsspec, opened for reading bytes."""
    if "://" in str(path):
        import fsspec

        return fsspec.open(str(path), "rb").open()
    return open(path, "rb")


def iter_jsonl(path: PathLike) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Yield `(row, line, record)` for the records of a JSON-lines file (gzipped when its name ends with `.gz`; local,
    or any fsspec URL such as `hf://datasets/...`).

    `row` counts the records from 0 and `line` the file's lines from 1 (blank lines are not records). Lines are read
    one by one with `json`, so records may differ in their fields' types (e.g. a PRO prefix that is a string in one
    record and a list of turns in the next), a missing field is simply absent, and every error names the file and
    the line: malformed JSON, a line that is not a JSON object, text that is not UTF-8, a corrupt or truncated gzip
    file. A byte-order mark at the start is skipped. A file without any record raises too.

    Raises:
        ValueError: naming the file and the line.
    """
    row, line_number = 0, 0
    try:
        with _open_binary(path) as raw_handle:
            handle = gzip.open(raw_handle, "rb") if str(path).endswith(".gz") else raw_handle  # noqa: SIM115 - closed with raw_handle
            for line_number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8-sig" if line_number == 1 else "utf-8")
                except UnicodeDecodeError as error:
                    raise ValueError(
                        f"{path}, line {line_number}: not UTF-8 text (byte {raw[error.start]:#04x} at column "
                        f"{error.start + 1}); re-encode the file as UTF-8."
                    ) from error
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(
                        f"{path}, line {line_number}: not valid JSON ({error.msg} at column {error.colno})."
                    ) from error
                if not isinstance(record, dict):
                    raise ValueError(
                        f"{path}, line {line_number}: expected a JSON object (one record per line), got "
                        f"{type(record).__name__}."
                    )
                yield row, line_number, record
                row += 1
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise ValueError(
            f"{path}, line {line_number + 1}: the gzip file is corrupt or truncated ({error})."
        ) from error
    if row == 0:
        raise ValueError(f"{path}: the file holds no JSON record (it is empty or blank).")


def check_jsonl(path: PathLike) -> None:
    """Read a JSON-lines file through, raising `iter_jsonl`'s error (file and line) where it is malformed."""
    for _ in iter_jsonl(path):
        pass


def as_files(data_files: PathLike | list[PathLike]) -> list[PathLike]:
    """One path or a list of paths, as a list."""
    return [data_files] if isinstance(data_files, (str, os.PathLike)) else list(data_files)
