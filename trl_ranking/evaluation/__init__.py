"""The papers' evaluation: batched generation (from `trl_ranking.generation`), BLEU, sigmoid-normalised reward, judge win rates, the PRO table, and IFEval scored as Google's official scorer does."""

from ..generation import HH_STOP_STRINGS, PRO_STOP_STRINGS, generate_responses, is_hh_prompt, truncate_at_stop_strings
from .dove_table import DOVE_TEMPERATURES, evaluate_dove_win_rates, format_dove_table
from .ifeval import IFEvalResult, evaluate_ifeval, format_ifeval_table, load_ifeval_prompts, score_ifeval
from .metrics import Judge, bleu, compute_rewards, mean_reward, pairwise_win_rate, pro_bleu
from .pro_table import evaluate_pro_table_row, format_pro_table


__all__ = [
    "DOVE_TEMPERATURES",
    "HH_STOP_STRINGS",
    "PRO_STOP_STRINGS",
    "IFEvalResult",
    "Judge",
    "bleu",
    "compute_rewards",
    "evaluate_dove_win_rates",
    "evaluate_ifeval",
    "evaluate_pro_table_row",
    "format_dove_table",
    "format_ifeval_table",
    "format_pro_table",
    "generate_responses",
    "is_hh_prompt",
    "load_ifeval_prompts",
    "mean_reward",
    "pairwise_win_rate",
    "pro_bleu",
    "score_ifeval",
    "truncate_at_stop_strings",
]
