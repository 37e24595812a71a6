"""The pack's shape: the library never imports the host, the CLI answers, errors are one line."""
import ast

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


def test_cli_help_lists_every_subcommand():
    out = run_cli("--help")
    assert out.returncode == 0
    for cmd in ("demo", "generate", "verify-checkpoint", "convert-checkpoint"):
        assert cmd in out.stdout
        sub = run_cli(cmd, "--help")
        assert sub.returncode == 0, sub.stderr
