"""trl-ranking: ranking (PRO) and joint preference (DOVE) trainers for TRL."""

from .collators import DataCollatorForRanking
from .pro import PROConfig, PROTrainer


__version__ = "0.1.0"

__all__ = ["DataCollatorForRanking", "PROConfig", "PROTrainer"]
