"""Data tools: loaders for the papers' formats, ranking and joint-pair builders."""

from .hh_rlhf import load_hh_rlhf, split_hh_transcript


__all__ = ["load_hh_rlhf", "split_hh_transcript"]
