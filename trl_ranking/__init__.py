"""trl-ranking: ranking (PRO) and joint preference (DOVE) trainers for TRL."""

from .collators import DataCollatorForJointPreference, DataCollatorForRanking
from .dove import DOVEConfig, DOVETrainer
from .judges import OpenAIChatJudge, RewardModelJudge
from .pro import PROConfig, PROTrainer
from .rewards import RewardModelScorer


__version__ = "0.1.0"

__all__ = [
    "DOVEConfig",
    "DOVETrainer",
    "DataCollatorForJointPreference",
    "DataCollatorForRanking",
    "OpenAIChatJudge",
    "PROConfig",
    "PROTrainer",
    "RewardModelJudge",
    "RewardModelScorer",
]
