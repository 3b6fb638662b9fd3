"""Raw HH-RLHF transcripts to TRL preference rows."""

from __future__ import annotations

import logging

from datasets import Dataset

from .jsonl import PathLike, as_files, iter_jsonl


logger = logging.getLogger(__name__)

ASSISTANT_TAG = "\n\nAssistant:"
HUMAN_TAG = "\n\nHuman:"


def split_hh_transcript(transcript: str) -> tuple[str, str]:
    """Split an HH-RLHF transcript at its last Assistant turn: (prompt ending with "Assistant:", response)."""
    index = transcript.rfind(ASSISTANT_TAG)
    if index < 0:
        raise ValueError("transcript has no '\\n\\nAssistant:' turn")
    cut = index + len(ASSISTANT_TAG)
    return transcript[:cut], transcript[cut:]


def _hh_messages(prompt: str) -> list[dict[str, str]]:
    messages = []
    for chunk in prompt.split("\n\n"):
        if chunk.startswith("Human:"):
            messages.append({"role": "user", "content": chunk[len("Human:") :].strip()})
        elif chunk.startswith("Assistant:"):
            messages.append({"role": "assistant", "content": chunk[len("Assistant:") :].strip()})
        elif messages and chunk:
            messages[-1]["content"] += "\n\n" + chunk
    # The prompt ends with the empty Assistant turn the completion answers
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    return messages


def load_hh_rlhf(
    data_files: PathLike | list[PathLike], conversational: bool = False, max_rows: int | None = None
) -> Dataset:
    """Load raw HH-RLHF transcripts (jsonl, gzipped or not) as preference rows `prompt`, `chosen`, `rejected`.

    The prompt is the shared transcript up to and including the last `"\\n\\nAssistant:"`; rows whose two transcripts
    have different contexts are dropped and counted in the log (the PRO paper's filtering). With `conversational=True`
    the rows are TRL messages (`prompt` a list of turns, `chosen`/`rejected` one assistant turn each).

    Raises:
        ValueError: a malformed line, naming the file, the line number and the field.
    """
    rows: dict[str, list] = {"prompt": [], "chosen": [], "rejected": []}
    dropped = 0
    for file in as_files(data_files):
        for line_number, record in iter_jsonl(file):
            sides = {}
            for field in ("chosen", "rejected"):
                value = record.get(field)
                if not isinstance(value, str) or not value:
                    raise ValueError(f"{file}, line {line_number}: field '{field}' is missing or not a string")
                try:
                    sides[field] = split_hh_transcript(value)
                except ValueError as error:
                    raise ValueError(f"{file}, line {line_number}: field '{field}': {error}") from error
            if sides["chosen"][0] != sides["rejected"][0]:
                dropped += 1
                continue
            prompt = sides["chosen"][0]
            if conversational:
                rows["prompt"].append(_hh_messages(prompt))
                rows["chosen"].append([{"role": "assistant", "content": sides["chosen"][1].strip()}])
                rows["rejected"].append([{"role": "assistant", "content": sides["rejected"][1].strip()}])
            else:
                rows["prompt"].append(prompt)
                rows["chosen"].append(sides["chosen"][1])
                rows["rejected"].append(sides["rejected"][1])
            if max_rows is not None and len(rows["prompt"]) >= max_rows:
                break
        if max_rows is not None and len(rows["prompt"]) >= max_rows:
            break
    if dropped:
        logger.warning("load_hh_rlhf: dropped %d rows whose chosen and rejected contexts differ", dropped)
    return Dataset.from_dict(rows)
