from .config import PROConfig
from .trainer import PROTrainer


__all__ = ["PROConfig", "PROTrainer"]
