"""superhf: SuperHF (Mukobi et al. 2023) for transformers models.

    from superhf import SuperHFConfig, SuperHFTrainer
    SuperHFTrainer(args=SuperHFConfig(output_dir="runs/demo")).train()

The names load on first use, so `import superhf` (and `superhf --help`) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from superhf.config import SuperHFConfig
    from superhf.train.trainer import SuperHFTrainer

__all__ = ["SuperHFConfig", "SuperHFTrainer"]
__version__ = "0.1.0"

_WHERE = {"SuperHFConfig": "superhf.config", "SuperHFTrainer": "superhf.train.trainer"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'superhf' has no attribute {name!r}")
