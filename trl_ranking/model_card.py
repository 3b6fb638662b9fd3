"""The trl-ranking line of the model card that `DPOTrainer` writes with each checkpoint.

TRL's `create_model_card` fills its `lm_model_card.md` template with the trainer's `_name`, `_paper` (title, arXiv
id, BibTeX citation) and `_tag_names`, and lists the TRL, transformers, PyTorch, datasets and tokenizers versions.
`ModelCardMixin` adds trl-ranking beside TRL, with its version, to the card TRL wrote.
"""

from __future__ import annotations

import os
from pathlib import Path


REPOSITORY_URL = "https://github.com/trl-ranking/trl-ranking"
# Texts of TRL's `lm_model_card.md` the trl-ranking lines go next to (checked in `tests/test_trl_contract.py`)
TRL_SENTENCE = "It has been trained using [TRL](https://github.com/huggingface/trl)."
TRL_VERSION_LINE = "- TRL: "


def add_trl_ranking_to_card(card: str, version: str) -> str:
    """`card` (a model card written by TRL) naming trl-ranking `version` beside TRL. Idempotent; when TRL's template
    no longer has the expected texts, a short section is appended instead."""
    version_line = f"- trl-ranking: {version}"
    if version_line in card:
        return card
    sentence = (
        f"It has been trained using [trl-ranking]({REPOSITORY_URL}) {version}, an extension of "
        "[TRL](https://github.com/huggingface/trl)."
    )
    if TRL_SENTENCE in card and TRL_VERSION_LINE in card:
        card = card.replace(TRL_SENTENCE, sentence, 1)
        return card.replace(TRL_VERSION_LINE, f"{version_line}\n{TRL_VERSION_LINE}", 1)
    return f"{card.rstrip()}\n\n## trl-ranking\n\n{sentence}\n\n{version_line}\n"


class ModelCardMixin:
    """Adds trl-ranking and its version to the model card of TRL's `create_model_card` (put before `DPOTrainer`)."""

    def create_model_card(
        self, model_name: str | None = None, dataset_name: str | None = None, tags: str | list[str] | None = None
    ) -> None:
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        path = Path(self.args.output_dir) / "README.md"
        if self.is_world_process_zero() and os.path.isfile(path):
            from trl_ranking import __version__  # at call time: the package imports this module

            path.write_text(add_trl_ranking_to_card(path.read_text(encoding="utf-8"), __version__), encoding="utf-8")
