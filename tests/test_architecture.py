"""The package's architecture, read from its source with ``ast`` (no module is imported): one package
per stage, dependencies running one way, no import circle, no module the command never reaches."""

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"text3d": REPO / "text3d", "text3d.renderers": REPO / "renderers", "text3d.guidance": REPO / "guidance"}
"""Import roots and their folders (``renderers/`` and ``guidance/`` install as ``text3d.*``)."""

LAYERS = [["core"], ["renderers"], ["scene"], ["prior"], ["guidance"], ["export"], ["run"],
          ["edit", "multiview", "video"], ["batch"], ["view"], ["cli"]]
"""Stage packages, lowest first: a package imports only packages of lower layers (and itself)."""
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
TOOLS = {"text3d.data.make_clip_tokenizer": "a maintainer's script that writes the bundled tokenizer files"}
"""Modules the command does not reach on purpose, with the reason."""


def modules() -> Dict[str, Path]:
    out = {}
    for root, folder in ROOTS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if root == "text3d" and parts and parts[0] in ("renderers", "guidance"):
                continue
            out[".".join([root, *parts])] = path
    return out


MODULES = modules()


def _type_checking_lines(tree: ast.AST) -> Set[int]:
    """Line numbers of ``if TYPE_CHECKING:`` blocks (annotations only, never executed)."""
    lines: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _target(name: str) -> Optional[str]:
    """The module ``name`` refers to: itself, or its longest prefix that is a module."""
    while name and name not in MODULES:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name or None


def imports_of(module: str) -> Set[str]:
    """The package modules ``module`` imports, at module level or inside functions (lazy imports are
    dependencies too), except in ``if TYPE_CHECKING:`` blocks."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: Set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found.update(t for t in map(_target, names) if t is not None and t != module)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def _package(module: str) -> Optional[str]:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a readable circle."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_relative_lazy_and_package_imports():
    """The reader is checked on imports it must see: a lazy relative one inside a function, a
    cross-package absolute one, and ``from package import module``."""
    assert "text3d.prior.scene_eval" in GRAPH["text3d.run.trainer"]  # lazy, inside Run.finish
    assert "text3d.core.errors" in GRAPH["text3d.renderers.volume"]
    assert "text3d.scene.background" in GRAPH["text3d.scene"]  # from . import background, ...


def test_no_import_circle():
    found = cycles(GRAPH)
    assert not found, "import circle(s): " + "; ".join(" -> ".join(c + [c[0]]) for c in found)


def test_dependencies_run_one_way():
    """core <- renderers <- scene <- prior <- guidance <- export <- run <- edit, multiview, video
    <- batch <- cli; packages of one layer do not import each other."""
    wrong = []
    for module, deps in GRAPH.items():
        mine = _package(module)
        for dep in deps:
            theirs = _package(dep)
            if mine is None or theirs is None or mine == theirs:
                continue
            if RANK[theirs] >= RANK[mine]:
                wrong.append(f"{module} -> {dep}")
    assert not wrong, f"imports against the layering ({len(wrong)}): " + ", ".join(sorted(wrong))


def test_every_stage_is_a_package_that_says_what_it_may_import():
    for pkg in RANK:
        module = f"text3d.{pkg}"
        assert module in MODULES and MODULES[module].name == "__init__.py", f"{pkg} is not a package"
        doc = ast.get_docstring(ast.parse(MODULES[module].read_text(encoding="utf-8"))) or ""
        assert "May import" in doc, f"{MODULES[module]}: its docstring should say what the package may import"


def test_the_package_root_holds_no_stage_module():
    """A newcomer finds every stage by its folder: ``text3d/`` holds packages, not flat modules."""
    flat = sorted(p.name for p in ROOTS["text3d"].glob("*.py"))
    assert flat == ["__init__.py", "__main__.py"], flat


def test_no_module_only_imports_others():
    """Registration happens where a class is defined; no module exists only to import the others
    (package ``__init__`` files may import their own modules)."""
    for module, path in MODULES.items():
        if path.name in ("__init__.py", "__main__.py"):
            continue
        body = [n for n in ast.parse(path.read_text(encoding="utf-8")).body
                if not isinstance(n, (ast.Import, ast.ImportFrom, ast.Expr))]
        assert body, f"{path} holds only imports"


def _verb_modules() -> List[str]:
    """The values of ``VERB_MODULES`` in ``text3d/cli/__init__.py``, read with ``ast``."""
    tree = ast.parse(MODULES["text3d.cli"].read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "VERB_MODULES":
            return list(ast.literal_eval(node.value).values())
    raise AssertionError("text3d/cli/__init__.py has no VERB_MODULES table")


def test_the_command_reaches_every_module():
    """Code that only tests or benchmarks use lives under tests/ or benchmarks/: every package module
    is reached from ``text3d.cli`` (lazy imports included), or is a listed tool."""
    verbs = [f"text3d.cli.{name}" for name in _verb_modules()]  # imported by name when a verb is used
    seen, todo = set(), ["text3d.cli", "text3d.__main__", "text3d.cli.__main__", *verbs]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(GRAPH[module])
        parent = module.rsplit(".", 1)[0]
        if parent in MODULES:  # importing a module runs its package's __init__
            todo.append(parent)
    unreached = sorted(set(MODULES) - seen - set(TOOLS))
    assert not unreached, f"modules no command uses (move them to tests/ or benchmarks/): {unreached}"


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_exists(layer):
    for pkg in layer:
        assert (ROOTS["text3d"] / pkg).is_dir() or (REPO / pkg).is_dir(), pkg
