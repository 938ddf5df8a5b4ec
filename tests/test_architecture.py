"""The package's shape, read from its source: no import cycles, imports pointing one way, small modules and
functions, no private names borrowed across modules.

Every ``import`` counts, including those inside functions (a lazy import is still a dependency: it only moves the
cost to first use). The graph is built from the AST, so nothing is imported here.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "laconic_pyserini"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

#: Layers, lowest first; a module may import its own layer and those below, never one above.
#: Anything not named here (CLIs, any ``__main__``, compare, reproduce, serving, eval, train, ...) is
#: orchestration, the top layer.
LAYERS = (
    {"errors", "owned", "outputs", "console"},
    {"data", "ids", "ir_datasets_export", "topics", "spec", "st_folder", "fingerprint", "quantize", "modeling",
     "yaml_file", "json_file", "text_file", "jvm", "run", "shipped", "fusion"},
    {"encode", "index", "searchers", "front"},
)


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import of a package module in ``name``."""
    path, is_package = MODULES[name]
    base = name.split(".") if is_package else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in MODULES:
                    found.append((submodule, [], node.lineno))
                elif target in MODULES:
                    found.append((target, [alias.name], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names if alias.name in MODULES]
    return [(target, names, line) for target, names, line in found if target != name]


GRAPH = {name: _imports(name) for name in MODULES}


def _layer(name: str) -> int:
    parts = name.split(".")
    if len(parts) == 1:  # the package itself: the version, and front-door names imported lazily by string (PEP 562)
        return 0
    if parts[-1] == "__main__":  # a package's CLI is orchestration, whatever package it sits in
        return len(LAYERS)
    for number, layer in enumerate(LAYERS):
        if parts[1] in layer:
            return number
    return len(LAYERS)


def _find_cycle() -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target, _, _ in GRAPH[node]:
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_function_level_imports():
    # searchers/__init__ opens each backend with an import inside a function: the graph must hold those edges,
    # or a cycle through a lazy import would go unseen.
    targets = {target for target, _, _ in GRAPH["laconic_pyserini.searchers"]}
    assert {"laconic_pyserini.searchers.bm25", "laconic_pyserini.searchers.faiss"} <= targets


def test_no_import_cycles():
    cycle = _find_cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_point_down():
    upward = [f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)}) at line {line}"
              for name, edges in GRAPH.items() for target, _, line in edges if _layer(target) > _layer(name)]
    assert not upward, "\n".join(upward)


def test_searchers_do_not_import_encode():
    # A searcher reads index folders (laconic_pyserini.index) and encodes queries through modeling; the encode
    # package is the corpus-encoding pipeline.
    bad = [f"{name} imports {target}" for name, edges in GRAPH.items() if name.startswith("laconic_pyserini.searchers")
           for target, _, _ in edges if target.startswith("laconic_pyserini.encode")]
    assert not bad, "\n".join(bad)


def test_no_private_names_across_modules():
    borrowed = [f"{name}:{line} imports {target}.{imported}" for name, edges in GRAPH.items()
                for target, names, line in edges for imported in names
                if imported.startswith("_") and not imported.startswith("__")]
    assert not borrowed, "\n".join(borrowed)


def test_modules_are_small():
    long = {name: n for name, (path, _) in MODULES.items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_functions_are_short():
    long = []
    for name, (path, _) in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name} (line {node.lineno}): {lines} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


# ------------------------------------------------------------------------------------------------ one registry


class _ListSearcher:
    """A complete backend in a few lines: exact dot products over a fixed list of sparse documents."""

    encodes_queries = True
    DOCUMENTS = {"d1": {"heart": 3, "attack": 2}, "d2": {"heart": 1}, "d3": {"cholesterol": 5}}

    def __init__(self, location, *, boost: int = 1) -> None:
        self.location, self.boost = str(location), boost

    def encode_query(self, text: str) -> dict[str, int]:
        return {term: 1 for term in text.split()}

    def search_encoded(self, encoded: dict[str, int], k: int):
        scores = {d: self.boost * sum(w * vector.get(t, 0) for t, w in encoded.items())
                  for d, vector in self.DOCUMENTS.items()}
        return sorted(((d, float(s)) for d, s in scores.items() if s > 0), key=lambda h: (-h[1], h[0]))[:k]

    def batch_search(self, queries, k: int, threads: int = 1):
        return {q: self.search_encoded(self.encode_query(text), k) for q, text in queries.items()}


def test_a_backend_is_one_module_plus_one_registry_entry(tmp_path, monkeypatch):
    """What a location-scheme backend (``milvus://``) needs: one entry; the search CLI and serving find it there."""
    from laconic_pyserini import searchers, serving
    from laconic_pyserini.run import read_trec_run
    from laconic_pyserini.search import main as search_main

    entry = searchers.Backend("listed", "list", _ListSearcher, (searchers.Option("--boost", int, "score factor"),),
                              scheme="list")
    monkeypatch.setitem(searchers.REGISTRY, "listed", [entry])
    assert searchers.kind_of("list://three-documents") == "listed"
    assert isinstance(searchers.open_searcher("list://three-documents"), _ListSearcher)
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\theart attack\nq2\tcholesterol\n", encoding="utf-8")
    run = tmp_path / "run.trec"
    assert search_main(["--index", "list://three-documents", "--topics", str(topics), "--output", str(run),
                        "--boost", "2"]) == 0
    assert read_trec_run(run) == {"q1": [("d1", 10.0), ("d2", 2.0)], "q2": [("d3", 10.0)]}
    # A flag of another backend is refused by name, not passed through or ignored.
    assert search_main(["--index", "list://three-documents", "--topics", str(topics), "--output", str(run),
                        "--query-cut", "5"]) == 2
    # Serving opens it through the same registry, timing its two halves; self-hits go by the one shared rule.
    stats = serving.measure_serving("list://three-documents", {"d1": "heart"}, str(tmp_path / "served.trec"),
                                    hits=1, remove_query=True)
    assert read_trec_run(tmp_path / "served.trec") == {"d1": [("d2", 1.0)]} and stats.avg_query_terms == 1.0
