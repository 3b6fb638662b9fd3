"""Reading JSON-lines files (gzipped or not, local or `hf://`) with `datasets.load_dataset("json")`, with errors that
name the file and, where `datasets` says it, the row; writing them."""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from typing import Any


PathLike = str | os.PathLike


def open_text(path: PathLike, mode: str):
    """Open a text file, gzipped when its name ends with `.gz`."""
    opener = gzip.open if str(path).endswith(".gz") else open
    return opener(path, mode + "t", encoding="utf-8")


def _load_json_file(path: PathLike):
    """`datasets.load_dataset("json", data_files=path, split="train")`, its errors turned into `ValueError`s that name
    the file (the builder's own message already names the row of a JSON syntax error)."""
    import datasets
    from datasets.exceptions import DatasetGenerationError

    try:
        return datasets.load_dataset("json", data_files=str(path), split="train")
    except DatasetGenerationError as error:
        cause = error.__cause__ or error
        raise ValueError(f"{path}: not valid JSON lines, one object per line ({cause})") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error}); re-encode the file as UTF-8.") from error
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: the gzip file is corrupt or truncated ({error}).") from error
    except StopIteration as error:  # an empty file stops the builder's schema inference
        raise ValueError(f"{path}: the file holds no JSON record (it is empty or blank).") from error
    except ValueError as error:
        if "corresponds to no data" in str(error):  # a blank file yields no split
            raise ValueError(f"{path}: the file holds no JSON record (it is empty or blank).") from error
        # e.g. the builder's fallback reader, for fields whose type changes between records, on a blank line
        raise ValueError(f"{path}: `datasets` could not read it as JSON lines ({error}).") from error


def iter_jsonl(path: PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield `(row, record)` for the records of a JSON-lines file, read with `datasets.load_dataset("json")`.

    `row` counts the records from 0 (blank lines are not records). A field missing from some records is `None` in
    them, as `datasets` fills it. A byte-order mark is skipped; errors name the file: malformed JSON (with the row
    that `datasets` reports), a corrupt or truncated gzip file, a file without any record, and text that is not
    UTF-8 (with the row where it is found).

    Raises:
        ValueError: naming the file (and the row where known).
    """
    dataset = _load_json_file(path)
    if len(dataset) == 0:
        raise ValueError(f"{path}: the file holds no JSON record (it is empty or blank).")
    records = iter(dataset)  # iterating reads the table in batches (indexing row by row is much slower)
    for row in range(len(dataset)):
        try:
            record = next(records)
        except UnicodeDecodeError as error:  # found when the batch holding the bytes is decoded
            raise ValueError(
                f"{path}, near row {row}: not UTF-8 text ({error}); re-encode the file as UTF-8."
            ) from error
        yield row, record


def as_files(data_files: PathLike | list[PathLike]) -> list[PathLike]:
    """One path or a list of paths, as a list."""
    return [data_files] if isinstance(data_files, (str, os.PathLike)) else list(data_files)
