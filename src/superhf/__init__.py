"""superhf: SuperHF (Mukobi et al. 2023) for transformers models.

from superhf import SuperHFConfig, SuperHFTrainer
SuperHFTrainer(args=SuperHFConfig(output_dir="runs/demo")).train()
"""

from superhf.config import SuperHFConfig
from superhf.trainer import SuperHFTrainer

__all__ = ["SuperHFConfig", "SuperHFTrainer"]
__version__ = "0.1.0"
