"""trl-ranking: ranking (PRO) and joint preference (DOVE) trainers for TRL."""

__version__ = "0.1.0"
