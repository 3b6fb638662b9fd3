"""Reading and writing JSON-lines files (gzipped or not), with errors that name the file, the line and the field."""

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


def iter_jsonl(path: PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield `(line_number, record)` for the non-blank lines of a jsonl file.

    Lines are decoded one by one (UTF-8; a byte-order mark at the start of the file is skipped), so that every error
    names the file and the line: malformed JSON, a line that is not UTF-8 (e.g. latin-1 bytes), a corrupt or
    truncated gzip file. A file without any record raises too, instead of loading as 0 rows.

    Raises:
        ValueError: naming the file and the line.
    """
    line_number, records = 0, 0
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
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
                    raise ValueError(f"{path}, line {line_number}: not valid JSON ({error.msg})") from error
                if not isinstance(record, dict):
                    raise ValueError(
                        f"{path}, line {line_number}: expected a JSON object, got {type(record).__name__}"
                    )
                records += 1
                yield line_number, record
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise ValueError(
            f"{path}, line {line_number + 1}: the gzip file is corrupt or truncated ({error})."
        ) from error
    if records == 0:
        raise ValueError(f"{path}: the file holds no JSON record (it is empty or blank).")


def as_files(data_files: PathLike | list[PathLike]) -> list[PathLike]:
    """One path or a list of paths, as a list."""
    return [data_files] if isinstance(data_files, (str, os.PathLike)) else list(data_files)
