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


def _split_final_assistant_run(transcript: str) -> tuple[str, str] | None:
    """Split before a final run of consecutive Assistant turns, merged into one response as the official code does.

    A few HH-RLHF transcripts end with two Assistant turns in a row. The official PRO preprocessing
    (`train/hh_preprocess_data/step_1_process.py`, `_split_dialogue`) merges consecutive turns of one speaker into
    one message, joining their stripped texts with `"\\n"`; the response is that merged last message. Returns `None`
    when the transcript does not end with such a run.
    """
    human = transcript.rfind(HUMAN_TAG)
    first = transcript.find(ASSISTANT_TAG, max(human, 0))
    if first < 0:
        return None
    cut = first + len(ASSISTANT_TAG)
    parts = transcript[cut:].split(ASSISTANT_TAG)
    if len(parts) < 2:
        return None
    return transcript[:cut], " " + "\n".join(part.strip() for part in parts)


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

    The prompt is the shared transcript up to and including the last `"\\n\\nAssistant:"`. When one transcript ends
    with two or more Assistant turns in a row (5 rows of the harmless-base test split), the split is made before that
    run and the run is merged into one response (texts stripped, joined with `"\\n"`), as the official PRO
    preprocessing merges consecutive turns: all 2,312 harmless-base test rows are kept, the paper's Table 1 count.
    Rows whose two transcripts still have different contexts are dropped and counted in the log. With
    `conversational=True` the rows are TRL messages (`prompt` a list of turns, `chosen`/`rejected` one assistant
    turn each).

    Raises:
        ValueError: a malformed record, naming the file, the row (from 0) and the field.
    """
    rows: dict[str, list] = {"prompt": [], "chosen": [], "rejected": []}
    dropped = merged = 0
    for file in as_files(data_files):
        for row, line, record in iter_jsonl(file):
            sides = {}
            for field in ("chosen", "rejected"):
                value = record.get(field)
                if not isinstance(value, str) or not value:
                    raise ValueError(f"{file}, row {row} (line {line}): field '{field}' is missing or not a string")
                try:
                    sides[field] = split_hh_transcript(value)
                except ValueError as error:
                    raise ValueError(f"{file}, row {row} (line {line}): field '{field}': {error}") from error
            if sides["chosen"][0] != sides["rejected"][0]:
                # A side ending with consecutive Assistant turns: split both before their last Human turn's answer
                runs = {f: _split_final_assistant_run(record[f]) or sides[f] for f in sides}
                if runs["chosen"][0] != runs["rejected"][0]:
                    dropped += 1
                    continue
                sides = runs
                merged += 1
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
    if merged:
        logger.info("load_hh_rlhf: merged the consecutive final Assistant turns of %d rows into one response", merged)
    if dropped:
        logger.warning("load_hh_rlhf: dropped %d rows whose chosen and rejected contexts differ", dropped)
    return Dataset.from_dict(rows)
