"""The package's dependencies run one way: cli -> train / evaluation -> the shared stages.

Read from the source with `ast`, every `import` and `from ... import` wherever it stands (at
the top, inside a function, under `if TYPE_CHECKING:`), so a stray import fails here before it
becomes a cycle:

- layers import only the layers below them;
- no import cycle, inside a package or across packages;
- a package takes only public names from another package (no `_private` across packages).

The checkers take sources as text, so the last test shows that each of them catches what it is
for on a small made-up package.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
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
KNOWN_CYCLES = []
"""Cycles the cycle check lets pass, each exactly as it is (a larger cycle through them fails)."""


@dataclass(frozen=True)
class Import:
    importer: str
    """The importing module, e.g. 'superhf.compare.evaluation' ('superhf.compare' for its
    __init__.py)."""
    module: str
    """The superhf module imported; `from package import submodule` names the submodule."""
    name: str | None
    """The name taken from it (`from module import name`); None for `import module`."""


def _sources() -> dict[str, str]:
    """Module name -> source of every module in src/superhf (a package under its own name)."""
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(("superhf", *parts))] = path.read_text(encoding="utf-8")
    return modules


def _package(module: str, modules: dict[str, str]) -> str:
    """The package a module belongs to: itself for a package, else its parent."""
    is_package = any(other.startswith(module + ".") for other in modules)
    return module if is_package or "." not in module else module.rsplit(".", 1)[0]


def parse_imports(modules: dict[str, str], root: str = "superhf") -> list[Import]:
    """Every import of a `root` module in `modules` (name -> source), at any depth."""
    found = []
    for importer, source in modules.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                found += [Import(importer, a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the importer's package, up level - 1
                    package = _package(importer, modules).split(".")
                    anchor = ".".join(package[: len(package) - node.level + 1])
                    base = f"{anchor}.{base}" if base else anchor
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.append(
                        Import(importer, sub, None)
                        if sub in modules
                        else Import(importer, base, alias.name)
                    )
    return [i for i in found if i.module == root or i.module.startswith(root + ".")]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(imports: list[Import], modules: dict[str, str]) -> list[str]:
    """Imports of a private name (or a private module) from another package."""
    bad = []
    for i in imports:
        taken = i.name if i.name is not None else i.module.rsplit(".", 1)[-1]
        if _private(taken) and _package(i.importer, modules) != _package(i.module, modules):
            bad.append(f"{i.importer} imports {taken} from {i.module}")
    return sorted(set(bad))


def import_cycles(imports: list[Import]) -> list[list[str]]:
    """The import cycles: each strongly connected set of two or more modules, sorted."""
    graph: dict[str, set[str]] = {}
    for i in imports:
        if i.importer != i.module:
            graph.setdefault(i.importer, set()).add(i.module)
            graph.setdefault(i.module, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                members.append(member)
                if member == node:
                    break
            if len(members) > 1:
                cycles.append(sorted(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def _layer(module: str) -> str:
    """'superhf.train.loss' -> 'train'; 'superhf.data' -> 'data'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports() -> list[tuple[str, str]]:
    """(importing module, imported superhf module) for every import in src/superhf."""
    return [(i.importer, i.module) for i in parse_imports(_sources())]


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
        if layer == "" or target == "superhf":  # the package itself: its version, lazy names
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


def test_no_import_cycles_not_even_inside_functions():
    cycles = [c for c in import_cycles(parse_imports(_sources())) if set(c) not in KNOWN_CYCLES]
    assert not cycles, "import cycles (move the shared piece down, or pass it in):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_packages_take_only_public_names_from_each_other():
    modules = _sources()
    bad = private_imports(parse_imports(modules), modules)
    assert not bad, "private names imported across packages (make them public):\n" + "\n".join(bad)


def test_the_checks_catch_a_cycle_and_a_private_import():
    """A made-up package with a cycle through a function-level import, a private name taken
    across packages, and what the checks allow (within a package, dunders, relative imports)."""
    modules = {
        "superhf": "__version__ = '0'\n",
        "superhf.pkg": "",
        "superhf.pkg.a": "def f():\n    from superhf.pkg import b\n\n_helper = 1\n",
        "superhf.pkg.b": "import superhf.pkg.a\n",
        "superhf.pkg.c": "from superhf.pkg.a import _helper\nfrom superhf import __version__\n",
        "superhf.pkg.d": "from . import c\nfrom .a import f\n",
        "superhf.other": "from superhf.pkg.a import _helper, f\nimport os\n",
    }
    imports = parse_imports(modules)
    assert Import("superhf.pkg.a", "superhf.pkg.b", None) in imports  # inside a function
    assert Import("superhf.pkg.d", "superhf.pkg.c", None) in imports  # relative
    assert Import("superhf.pkg.d", "superhf.pkg.a", "f") in imports
    assert all(i.module != "os" for i in imports)
    assert import_cycles(imports) == [["superhf.pkg.a", "superhf.pkg.b"]]
    assert private_imports(imports, modules) == ["superhf.other imports _helper from superhf.pkg.a"]
    # A longer cycle is found whole, and a module importing itself is none.
    modules["superhf.pkg.b"] = "from superhf.pkg.c import x\n"
    modules["superhf.pkg.c"] = "from superhf.pkg import a\nimport superhf.pkg.c\n"
    assert import_cycles(parse_imports(modules)) == [
        ["superhf.pkg.a", "superhf.pkg.b", "superhf.pkg.c"]
    ]
