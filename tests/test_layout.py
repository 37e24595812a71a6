"""The pack's shape: the library never imports the host, the CLI answers, errors are one line."""
import ast

import pytest

from conftest import ROOT, run_cli

HOST_MODULES = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "server",
                "execution", "latent_preview", "nodes"}


def test_library_never_imports_the_host():
    offenders = []
    for path in (ROOT / "emocast").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in HOST_MODULES]
    assert offenders == []


def test_library_never_reads_shared_folder():
    hits = [str(p.relative_to(ROOT)) for p in list((ROOT / "emocast").rglob("*.py")) + list((ROOT / "nodes").rglob("*.py"))
            if "../shared" in p.read_text()]
    assert hits == []


@pytest.mark.slow
def test_cli_help_lists_every_subcommand():
    out = run_cli("--help")
    assert out.returncode == 0
    for cmd in ("demo", "generate", "verify-checkpoint", "convert-checkpoint"):
        assert cmd in out.stdout
        sub = run_cli(cmd, "--help")
        assert sub.returncode == 0, sub.stderr


def import_graph(package: str = "emocast") -> dict[str, set[str]]:
    """{module: modules of the package it imports}, from the source with ast.

    Counted: `import a.b`, `from a import b` (b a module or a name), relative imports at any level,
    imports inside functions too (a lazy import only postpones a circle; it still ties the two
    modules together), and the parent packages Python runs first (importing a.b.c runs a.b).
    """
    files = {}
    for path in (ROOT / package).rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in files.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[:len(here.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
        for mod in list(found):  # importing a.b.c first runs a and a.b
            found |= {".".join(mod.split(".")[:i]) for i in range(1, mod.count(".") + 1)}
        graph[name] = {m for m in found if m in files and m != name and not name.startswith(m + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle a depth-first search meets (a back edge), as the modules along it."""
    state, path, found = {}, [], []

    def visit(u):
        state[u] = "open"
        path.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == "open":
                found.append(path[path.index(v):] + [v])
            elif v not in state:
                visit(v)
        path.pop()
        state[u] = "done"
    for u in sorted(graph):
        if u not in state:
            visit(u)
    return found


def test_the_import_graph_finds_circles():
    graph = import_graph()
    assert "emocast.constants" in graph["emocast.emotion.schedule"]  # a relative `from ..constants import`
    assert "emocast.models.loading" in graph["emocast.models.vae"]
    assert "emocast.emotion.schedule" in graph["emocast.conditioning"]  # a lazy import inside a method
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_import_circle_in_the_library():
    assert cycles(import_graph()) == []


def test_behaviour_references_point_at_existing_entries_and_no_outside_document_is_cited():
    import re

    doc = (ROOT / "docs" / "authors_behaviours.md").read_text()
    anchors = set(re.findall(r'<a id="(b\d+)"></a>', doc))
    assert anchors == {f"b{i}" for i in range(1, 33)}
    cited, stale = set(), []
    for path in [*(ROOT / "emocast").rglob("*.py"), *(ROOT / "nodes").rglob("*.py"), *(ROOT / "tests").glob("*.py")]:
        text = path.read_text()
        for ref in re.findall(r"authors_behaviours\.md(?:#(b\d+)| (B\d+)-(B\d+))", text):
            cited |= {ref[0]} if ref[0] else {f"b{i}" for i in range(int(ref[1][1:]), int(ref[2][1:]) + 1)}
        cited |= {f"b{n}" for n in re.findall(r"authors_behaviours\.md#b\d+(?:, #b(\d+))+", text)}
        if re.search(r"\bFACTS? \d", text) and path.name != "test_layout.py":
            stale.append(path.name)
    assert stale == [] and cited and cited <= anchors
