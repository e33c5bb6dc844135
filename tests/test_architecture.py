"""The package's shape: no import cycle (type-only imports included), the store at the top, small modules.

The import graph is read from the source with :mod:`ast`, not from ``sys.modules``: every ``import`` counts,
at module level, inside a function, and under ``if TYPE_CHECKING:`` (a type-only import still ties two
modules together: neither can be read, type-checked or moved without the other).

How an import becomes edges of the graph (``M`` is the importing module):

- ``import a.b.c`` and ``from a.b.c import x`` depend on ``a.b.c``; ``from a.b import c`` depends on the
  module ``a.b.c`` when there is one, else on ``a.b`` (``c`` is a name defined in ``a.b``).
- Importing ``a.b.c`` runs the ``__init__`` of the package ``a.b`` first, so the import also depends on
  ``a.b``, except for packages that contain ``M`` itself: those are already being imported when ``M``
  runs (Python imports a package before its modules), and counting them would turn every package that
  re-exports its modules into a cycle.
- So the top-level package ``ckptstore`` (the public facade, whose ``__init__`` imports nearly
  everything) is never an implicit dependency; a module depends on it only when it names it:
  ``from . import __version__`` or ``import ckptstore``. Inside the package that is a cycle through
  the facade (``store`` -> ``ckptstore`` -> ``store``), which is why the version lives in ``_version.py``.
  Consumers the facade does not import (the CLI, ``testing``) may use the facade.
- Lazy imports by name (``importlib.import_module("ckptstore.serializers.numpy")``, the serializer and
  backend registries) are not edges: they load plug-ins chosen at run time.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable
from fnmatch import fnmatchcase
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "ckptstore"

MUST_NOT_IMPORT_STORE: tuple[str, ...] = (
    "ckptstore.checkpoint",
    "ckptstore.serializers",
    "ckptstore.serializers.*",
    "ckptstore.manifest",
    "ckptstore.policies",
    "ckptstore._validate",
    "ckptstore._options",
    "ckptstore.errors",
    "ckptstore.backends",
    "ckptstore.backends.*",
    "ckptstore.commit",
    "ckptstore.commit.*",
    "ckptstore.pipeline",
    "ckptstore.transaction",
    "ckptstore.layout",
    "ckptstore._boundary",
    "ckptstore._threads",
    "ckptstore.catalog",
    "ckptstore.config",
    "ckptstore.oplog",
    "ckptstore.manifests",
    "ckptstore.index",
    "ckptstore.index_segments",
    "ckptstore.pointers",
    "ckptstore.gc",
    "ckptstore.restart",
    "ckptstore.context",
    "ckptstore.metadata",
    "ckptstore.find",
    "ckptstore.transfer",
    "ckptstore.caches",
    "ckptstore.queries",
    "ckptstore.policy_record",
    "ckptstore.snapshot",
    "ckptstore.sharded",
    "ckptstore.commit.shards",
)
"""Modules (``fnmatch`` patterns) that must not reach ``ckptstore.store``, directly or through others."""

MAX_LINES = 500

SIZE_CHECKED: tuple[str, ...] = (
    "ckptstore",
    "ckptstore.__main__",
    "ckptstore._boundary",
    "ckptstore._crash",
    "ckptstore._nofollow",
    "ckptstore._options",
    "ckptstore._progress",
    "ckptstore._redact",
    "ckptstore._threads",
    "ckptstore._validate",
    "ckptstore._version",
    "ckptstore.backends",
    "ckptstore.backends._localfs",
    "ckptstore.backends._parts",
    "ckptstore.backends._prefetch",
    "ckptstore.backends.base",
    "ckptstore.backends.fsspec",
    "ckptstore.backends.gcs",
    "ckptstore.backends.local",
    "ckptstore.backends.memory",
    "ckptstore.backends.registry",
    "ckptstore.backends.retrying",
    "ckptstore.backends.s3",
    "ckptstore.caches",
    "ckptstore.catalog",
    "ckptstore.checkpoint",
    "ckptstore.checksum",
    "ckptstore.cli",
    "ckptstore.cli.__main__",
    "ckptstore.cli._app",
    "ckptstore.cli._reference",
    "ckptstore.cli.finding",
    "ckptstore.cli.listing",
    "ckptstore.cli.maintenance",
    "ckptstore.cli.plot",
    "ckptstore.cli.runs",
    "ckptstore.cli._terms",
    "ckptstore.cli.transfer",
    "ckptstore.cli_reference",
    "ckptstore.commit",
    "ckptstore.commit._common",
    "ckptstore.commit.claims",
    "ckptstore.commit.record",
    "ckptstore.commit.rename",
    "ckptstore.commit.shards",
    "ckptstore.config",
    "ckptstore.context",
    "ckptstore.errors",
    "ckptstore.find",
    "ckptstore.gc",
    "ckptstore.index",
    "ckptstore.index_segments",
    "ckptstore.integrations",
    "ckptstore.integrations.dcp",
    "ckptstore.integrations.keras",
    "ckptstore.integrations.lightning",
    "ckptstore.integrations.loop",
    "ckptstore.integrations.torch",
    "ckptstore.integrations.transformers",
    "ckptstore.keep",
    "ckptstore.layout",
    "ckptstore.manifest",
    "ckptstore.manifests",
    "ckptstore.metadata",
    "ckptstore.oplog",
    "ckptstore.pipeline",
    "ckptstore.pointers",
    "ckptstore.policies",
    "ckptstore.policy_record",
    "ckptstore.queries",
    "ckptstore.resolve",
    "ckptstore.restart",
    "ckptstore.retry",
    "ckptstore.serializers",
    "ckptstore.serializers._reader",
    "ckptstore.serializers._verifying",
    "ckptstore.sharded",
    "ckptstore.snapshot",
    "ckptstore.stores",
    "ckptstore.serializers._registry",
    "ckptstore.serializers._writer",
    "ckptstore.serializers.numpy",
    "ckptstore.serializers.pytree",
    "ckptstore.serializers.raw",
    "ckptstore.serializers.safetensors",
    "ckptstore.serializers.torch",
    "ckptstore.testing",
    "ckptstore.testing.store_tests",
    "ckptstore.transaction",
    "ckptstore.transfer",
)
"""Modules held to :data:`MAX_LINES` (the others are being split; add each one once it is small)."""


# -- the graph ---------------------------------------------------------------------------------------------
def find_modules(src: Path = SRC) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its ``__init__``)."""
    modules: dict[str, Path] = {}
    for path in sorted((src / ROOT).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _packages_of(name: str) -> list[str]:
    """The packages that contain ``name``: ``a.b.c`` -> ``a``, ``a.b``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    """The ckptstore modules one import statement names (before adding the packages they run)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if node.level:
        here = module.split(".") if is_package else module.split(".")[:-1]
        base_parts = here[: len(here) - (node.level - 1)]
        base = ".".join([*base_parts, *([node.module] if node.module else [])])
    else:
        base = node.module or ""
    found: set[str] = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        found.add(sub if sub in modules else base)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """Module -> {ckptstore module it depends on: line of the first import that says so}."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        own_packages = set(_packages_of(module)) | ({module} if path.name == "__init__.py" else set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(module, path.name == "__init__.py", node, modules):
                while target and target not in modules:  # `import a.b.c` of a name in a.b: the module a.b
                    target = target.rpartition(".")[0]
                if not target or target == module:
                    continue
                runs = {p for p in _packages_of(target) if p not in own_packages}
                for dep in (target, *runs):
                    edges.setdefault(dep, node.lineno)
        graph[module] = edges
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:  # iterative: no recursion limit on deep graphs
        nonlocal counter
        work = [(start, iter(sorted(graph.get(start, {}))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(found)


def path_between(
    graph: dict[str, dict[str, int]], start: str, goal: str, within: Iterable[str] | None = None
) -> list[str]:
    """A shortest import chain from ``start`` to ``goal`` (breadth first), or [] if there is none."""
    allowed = set(within) if within is not None else None
    previous: dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        following: list[str] = []
        for node in frontier:
            for child in sorted(graph.get(node, {})):
                if allowed is not None and child not in allowed:
                    continue
                if child == goal:
                    chain = [goal, node]
                    while chain[-1] != start:
                        chain.append(previous[chain[-1]])
                    return chain[::-1]
                if child not in seen:
                    seen.add(child)
                    previous[child] = node
                    following.append(child)
        frontier = following
    return []


def describe_chain(graph: dict[str, dict[str, int]], chain: list[str]) -> str:
    """``a (line 3) -> b (line 7) -> c``: each arrow with the line of the import that makes it."""
    steps = [f"{a} (line {graph[a][b]})" for a, b in itertools.pairwise(chain)]
    return " -> ".join([*steps, chain[-1]])


def cycles(graph: dict[str, dict[str, int]]) -> list[str]:
    """The import cycles, described: for each tangle of modules, the shortest cycle through each of them."""
    described = []
    for component in strongly_connected(graph):
        loops: dict[tuple[str, ...], None] = {}
        for member in component:
            loop = path_between(graph, member, member, within=component)[:-1]
            turn = loop.index(min(loop))
            loops.setdefault(tuple(loop[turn:] + loop[:turn]), None)
        described.append(f"{len(component)} modules tied together: {', '.join(component)}")
        described.extend(f"  {describe_chain(graph, [*loop, loop[0]])}" for loop in loops)
    return described


def _matches(module: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(module, pattern) for pattern in patterns)


def reaches_store(graph: dict[str, dict[str, int]], patterns: Iterable[str]) -> list[str]:
    """The import chains by which a module matching ``patterns`` reaches ``ckptstore.store``."""
    found = []
    for module in sorted(graph):
        if _matches(module, patterns):
            chain = path_between(graph, module, f"{ROOT}.store")
            if chain:
                found.append(describe_chain(graph, chain))
    return found


def oversized(modules: dict[str, Path], limit: int = MAX_LINES) -> dict[str, int]:
    """Modules longer than ``limit`` lines, with their length."""
    lengths = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules.items()}
    return {name: n for name, n in sorted(lengths.items()) if n > limit}


def code_lines(path: Path) -> int:
    """Lines of ``path`` that are not docstrings (of the module, its classes and functions) or blank."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    skipped: set[int] = {i for i, line in enumerate(lines, 1) if not line.strip()}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(
            node, clean=False
        ):
            doc = node.body[0]
            skipped.update(range(doc.lineno, (doc.end_lineno or doc.lineno) + 1))
    return len(lines) - len(skipped)


FACADE_CODE_LINES = 450
"""``store.py`` is the public API's reference (its docstrings are the API pages): only its code is limited."""


# -- the guarantees ----------------------------------------------------------------------------------------
def test_no_import_cycle_among_ckptstore_modules_type_only_imports_included() -> None:
    graph = import_graph(find_modules())
    found = cycles(graph)
    assert not found, "import cycles (break each by a protocol on the lower side, or move the import):\n" + "\n".join(
        found
    )


def test_checkpoint_serializers_and_pure_helpers_never_import_the_store() -> None:
    graph = import_graph(find_modules())
    assert f"{ROOT}.store" in graph
    chains = reaches_store(graph, MUST_NOT_IMPORT_STORE)
    assert not chains, "modules below the store reach it:\n" + "\n".join(chains)


def test_size_checked_modules_stay_under_the_line_limit() -> None:
    modules = find_modules()
    too_long = oversized(modules)
    print("modules over", MAX_LINES, "lines:", too_long)
    stale = [name for name in SIZE_CHECKED if name not in modules]
    assert not stale, f"SIZE_CHECKED names modules that no longer exist: {stale}"
    checked = {name: n for name, n in too_long.items() if name in SIZE_CHECKED}
    assert not checked, f"modules over {MAX_LINES} lines (split them by dependency): {checked}"


def test_the_facade_is_a_thin_layer_over_the_parts() -> None:
    path = find_modules()[f"{ROOT}.store"]
    n = code_lines(path)
    assert n <= FACADE_CODE_LINES, f"store.py has {n} lines of code (docstrings aside); move logic into a part"


# -- the checker itself ------------------------------------------------------------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = tmp_path / ROOT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return find_modules(tmp_path)


def test_the_checker_sees_a_cycle_through_a_type_only_import_in_a_function_and_a_package_init(
    tmp_path: Path,
) -> None:
    modules = _tree(
        tmp_path,
        {
            "__init__.py": "from .store import Store\n",
            "store.py": "from .checkpoint import Checkpoint\n",
            "checkpoint.py": "def load():\n    from .serializers.numpy import save\n",
            "serializers/__init__.py": "from ._registry import Serializer\n",
            "serializers/_registry.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..store import Store\n"
            ),
            "serializers/numpy.py": "from ._registry import Serializer\nfrom .. import errors\n",
            "errors.py": "",
        },
    )
    graph = import_graph(modules)
    assert set(graph["ckptstore.checkpoint"]) == {"ckptstore.serializers.numpy", "ckptstore.serializers"}
    assert set(graph["ckptstore.serializers.numpy"]) == {"ckptstore.serializers._registry", "ckptstore.errors"}
    found = "\n".join(cycles(graph))
    assert "5 modules tied together: ckptstore.checkpoint, ckptstore.serializers, " in found
    assert "ckptstore.serializers._registry (line 3) -> ckptstore.store (line 1) -> ckptstore.checkpoint" in found
    assert reaches_store(graph, ["ckptstore.errors", "ckptstore.serializers.*"]) == [
        "ckptstore.serializers._registry (line 3) -> ckptstore.store",
        "ckptstore.serializers.numpy (line 1) -> ckptstore.serializers._registry (line 3) -> ckptstore.store",
    ]


def test_the_checker_counts_a_named_import_of_the_facade_but_not_the_package_a_module_lives_in(
    tmp_path: Path,
) -> None:
    modules = _tree(
        tmp_path,
        {
            "__init__.py": "__version__ = '1'\nfrom .store import Store\nfrom . import keep\n",
            "keep.py": "",
            "store.py": "from . import keep\nimport ckptstore.keep\n",
            "report.py": "from . import __version__\n",
        },
    )
    graph = import_graph(modules)
    assert set(graph["ckptstore.store"]) == {"ckptstore.keep"}
    assert set(graph["ckptstore.report"]) == {"ckptstore"}
    assert not cycles(graph)
    (tmp_path / ROOT / "store.py").write_text("def versions():\n    from . import __version__\n", encoding="utf-8")
    assert cycles(import_graph(modules)) == [
        "2 modules tied together: ckptstore, ckptstore.store",
        "  ckptstore (line 2) -> ckptstore.store (line 2) -> ckptstore",
    ]


def test_code_lines_skips_docstrings_and_blank_lines_but_counts_strings_that_are_code(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text(
        '"""Module.\n\nMore."""\n\nclass A:\n    """A doc."""\n\n'
        '    def f(self):\n        """F.\n\n        Long.\n        """\n'
        '        x = """not a docstring\n        """\n        return x\n',
        encoding="utf-8",
    )
    assert code_lines(path) == 5  # class A, def f, the two lines of x, return
