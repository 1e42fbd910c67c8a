"""The plan of the code, checked: packages by stage, imports pointing one way.

A newcomer should be able to read the folder listing as the path of a message
(README, "Architecture"); these tests keep that true as the code grows. Every
import counts, also those inside functions or under ``TYPE_CHECKING``: an
import moved into a function to dodge a cycle is still a cycle in the design.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ingest", "policy", "storage")
# What each top-level package may import from the others: ingest → storage → policy.
MAY_IMPORT = {"ingest": {"storage", "policy"}, "storage": {"policy"}, "policy": set()}
MAX_LINES = 450
MAX_FOLDER_SHARE = 0.25


def product_modules() -> dict[str, Path]:
    """Dotted name → file, for every product module (migrations aside)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative.parts[:2] == ("storage", "migrations"):
                continue
            parts = list(relative.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The product modules ``path`` imports (``from pkg import mod`` names ``pkg.mod``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                names.add(child if child in modules else node.module)
    return {name for name in names if name in modules}


def graph() -> dict[str, set[str]]:
    modules = product_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]


def test_imports_point_one_way() -> None:
    upward = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        for target in targets
        if target.split(".")[0] != module.split(".")[0]
        and target.split(".")[0] not in MAY_IMPORT[module.split(".")[0]]
    ]
    assert upward == []


def test_policy_opens_no_sockets_and_starts_no_processes() -> None:
    # Libraries that talk to the network, a database or start processes, and the
    # calls that open a connection or start a server; the config's default
    # hostname (socket.getfqdn) is a name, not a connection.
    libraries = {"subprocess", "multiprocessing", "ssl", "httpx", "aiosmtplib", "sqlalchemy"}
    libraries |= {"dns.asyncresolver", "dns.resolver", "psycopg", "aiosmtpd"}
    calls = {"socket", "create_connection", "open_connection", "start_server"}
    calls |= {"open_unix_connection", "start_unix_server", "ProcessPoolExecutor"}
    found = []
    for name, path in product_modules().items():
        if not name.startswith("policy"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [f"{name}: {a.name}" for a in node.names if a.name in libraries]
            elif isinstance(node, ast.ImportFrom) and node.module in libraries:
                found.append(f"{name}: {node.module}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
                if called in calls:
                    found.append(f"{name}: {called}()")
    assert found == []


def test_modules_are_small() -> None:
    large = {
        name: lines
        for name, path in product_modules().items()
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert large == {}


def test_no_folder_holds_a_quarter_of_the_product() -> None:
    lines: dict[Path, int] = defaultdict(int)
    for path in product_modules().values():
        lines[path.parent.relative_to(ROOT)] += len(path.read_text().splitlines())
    total = sum(lines.values())
    heavy = {str(folder): n for folder, n in lines.items() if n > MAX_FOLDER_SHARE * total}
    assert heavy == {}, f"of {total} lines"


def test_module_names_are_unique_and_not_the_standard_librarys() -> None:
    by_name: dict[str, list[str]] = defaultdict(list)
    stdlib = []
    for name, path in product_modules().items():
        stem = path.stem
        if stem in ("__init__", "__main__"):
            continue
        if stem in sys.stdlib_module_names:
            stdlib.append(name)
        # CLI command modules are named for their command, beside what they present.
        if not name.startswith("ingest.cli."):
            by_name[stem].append(name)
    assert stdlib == []
    assert {stem: names for stem, names in by_name.items() if len(names) > 1} == {}


def test_the_readme_names_files_that_exist() -> None:
    """The README's architecture section is the plan: every file and folder it names is real."""
    import re

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Architecture") : readme.index("### Rejection reasons")]
    paths = set(re.findall(r"\b((?:ingest|policy|storage)/[\w/]*\w(?:\.py)?)", section))
    missing = sorted(path for path in paths if not (ROOT / path).exists())
    # Bare file names in the drawing stand under their folder: each must be a product module.
    stems = {path.name for path in product_modules().values()}
    bare = set(re.findall(r"(?<![/\w])(\w+\.py)\b", section))
    assert len(paths) > 10 and len(bare) > 10
    assert missing == []
    assert sorted(bare - stems) == []


def test_tests_and_benchmarks_share_helpers_through_tests_support() -> None:
    """A test module imported by another (or by bench/) drags its tests along and
    hides what is shared; shared helpers live in tests/support."""
    found = []
    for path in sorted([*(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            found += [
                f"{path.relative_to(ROOT)}: {name}"
                for name in names
                if name.startswith(("tests.test_", "tests.conftest")) or name.startswith("test_")
            ]
    assert found == []
