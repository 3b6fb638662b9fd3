"""Data tools: loaders for the papers' formats, ranking and joint-pair builders."""

from .dove_format import DOVE_PROMPT_TEMPLATE, DOVE_TLDR_PROMPT_TEMPLATE, load_dove_jsonl, save_dove_jsonl
from .hh_rlhf import load_hh_rlhf, split_hh_transcript
from .joint_pairs import PairStats, build_conditional_pairs, build_joint_pairs
from .pro_format import load_pro_jsonl, save_pro_jsonl
from .ranking import add_completions, rank_completions, ranking_view
from .single_responses import select_single_responses
from .sparse_feedback import load_sparse_feedback_rankings


__all__ = [
    "DOVE_PROMPT_TEMPLATE",
    "DOVE_TLDR_PROMPT_TEMPLATE",
    "PairStats",
    "add_completions",
    "build_conditional_pairs",
    "build_joint_pairs",
    "load_dove_jsonl",
    "load_hh_rlhf",
    "load_pro_jsonl",
    "load_sparse_feedback_rankings",
    "rank_completions",
    "ranking_view",
    "save_dove_jsonl",
    "save_pro_jsonl",
    "select_single_responses",
    "split_hh_transcript",
]
