"""The package's dependencies run one way: cli -> train / evaluation -> the shared stages.

Read from the source with `ast`, so a stray import fails here before it becomes a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "superhf"
# The shared stages: importable by everyone, importing none of the layers above them.
SHARED = {
    "config",
    "settings",
    "errors",
    "files",
    "console",
    "stats",
    "data",
    "models",
    "batching",
    "generation",
    "sampling_model",
}


def _layer(module: str) -> str:
    """'superhf.train.loss' -> 'train'; 'superhf.data' -> 'data'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports() -> list[tuple[str, str]]:
    """(importing module, imported superhf module) for every import in src/superhf."""
    edges = []
    for path in SRC.rglob("*.py"):
        name = ".".join(("superhf", *path.relative_to(SRC).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges += [(name, t) for t in targets if t.startswith("superhf.")]
    return edges


def test_every_layer_imports_only_layers_below_it():
    allowed = {
        "cli": None,  # the top: anything
        "__main__": {"cli"},
        "train": {"train", "evaluation", "rewards", *SHARED},
        "evaluation": {"evaluation", "rewards", *SHARED},
        "rewards": {"rewards", *SHARED},
        # `superhf compare` runs and evaluates every method: it sits beside cli, above the rest.
        "compare": {"compare", "train", "evaluation", "rewards", *SHARED},
    }
    bad = []
    for source, target in _imports():
        layer, used = _layer(source), _layer(target)
        if layer == "__init__" or layer == "":
            continue
        ok = allowed.get(layer, SHARED)
        if ok is not None and used not in ok:
            bad.append(f"{source} imports {target}")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_shared_stages_do_not_import_train_evaluation_or_cli():
    bad = [
        f"{s} imports {t}"
        for s, t in _imports()
        if _layer(s) in SHARED and _layer(t) in ("train", "evaluation", "cli")
    ]
    assert not bad, "\n".join(bad)
