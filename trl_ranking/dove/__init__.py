from .config import DOVEConfig
from .trainer import DOVETrainer


__all__ = ["DOVEConfig", "DOVETrainer"]
