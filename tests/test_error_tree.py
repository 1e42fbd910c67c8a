"""The error tree of ``policy/errors.py`` is the one the code raises.

Every module of the product is read: each exception class it defines or
raises must join the tree under ``FirstlineError``, be a private signal
caught in its own module, or be one of the library exceptions listed here
with the reason it is not ours. And the tree drawn in the docstring must be
the classes' own: every class drawn, each under one of its bases, each in
the module its line names.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import inspect
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policy import errors
from policy.errors import FirstlineError

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ingest", "policy", "storage")

# Modules not imported to read their names: importing them runs them.
NOT_IMPORTED = {
    "storage.migrations.env": "Alembic's entry point: it migrates on import",
}

# Exceptions the product raises that are not in the tree, and why.
LIBRARY: dict[str, str] = {
    "builtins.ValueError": "what pydantic turns into a ConfigProblem when a validator raises it; "
    "and the parsers of typed-in values (storage.rejections' times), like int()",
    "builtins.TypeError": "a caller passed what no caller should (a bug of ours)",
    "builtins.RuntimeError": "an invariant of our own code broken (a bug), never a condition",
    "builtins.LookupError": "the batch's 'raw message is gone' (purged while queued): recorded "
    "as the entry's error under this name",
    "builtins.SystemExit": "Alembic's env.py refuses to run outside `firstline db upgrade`",
    "click.exceptions.UsageError": "click's own: a command line that cannot work, exit 2",
    "click.exceptions.BadParameter": "click's own: one option's value, exit 2",
    "click.exceptions.ClickException": "click's own: a command's message on stderr, exit 1",
    "starlette.exceptions.HTTPException": "Starlette's own: the console off answers 404",
    "aiosmtplib.errors.SMTPAuthenticationError": "aiosmtplib's own, for its login to report; "
    "the relay classifies it into an SmtpFailure",
    "spf.TempError": "pyspf's own: our DNS hook tells pyspf its lookup failed (temperror)",
    "dkim.KeyFormatError": "dkimpy's own: our key-record parse refuses a key too costly to "
    "check, and dkimpy treats it as a signature that does not verify",
    "policy.config.section.LocatedError": "a ValueError, as pydantic needs; it never leaves "
    "parse_config, which turns it into a ConfigProblem",
}


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module
    namespace: dict[str, Any]


@functools.cache
def product_modules() -> list[Module]:
    found: list[Module] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            name = name.removesuffix(".__init__")
            if name in NOT_IMPORTED or name.endswith("__main__"):
                namespace: dict[str, Any] = {}
            else:
                namespace = vars(importlib.import_module(name))
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            found.append(Module(name, path, tree, namespace))
    return found


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def resolve(node: ast.expr, module: Module) -> Any:
    """The object a dotted name in ``module`` stands for; None for a local name."""
    if isinstance(node, ast.Name):
        if node.id in module.namespace:
            return module.namespace[node.id]
        return getattr(builtins, node.id, None)
    if isinstance(node, ast.Attribute):
        owner = resolve(node.value, module)
        return None if owner is None else getattr(owner, node.attr)
    return None


def exception_classes(value: Any) -> list[type[BaseException]]:
    """The classes an exception object made from ``value`` can have: the class
    itself, or what a factory function is annotated to return."""
    if isinstance(value, type) and issubclass(value, BaseException):
        return [value]
    if inspect.isfunction(value):
        returned = typing.get_type_hints(value)["return"]
        return [t for t in typing.get_args(returned) or (returned,) if isinstance(t, type)]
    return []


def raised(module: Module) -> list[tuple[int, type[BaseException]]]:
    """(line, class) of every ``raise`` whose exception class can be read.

    ``raise exc`` of a local variable re-raises an object made elsewhere: the
    place that made it is a ``raise`` or a factory this reads.
    """
    found: list[tuple[int, type[BaseException]]] = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            found.extend((node.lineno, c) for c in exception_classes(resolve(target, module)))
    return found


def defined(module: Module) -> list[type[BaseException]]:
    return [
        value
        for value in module.namespace.values()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == module.name
    ]


def caught_here(cls: type[BaseException], module: Module) -> bool:
    """Whether ``module`` names ``cls`` in an ``except`` or hands it to a call
    (an exception handler's registration)."""
    for node in ast.walk(module.tree):
        names: list[ast.expr] = []
        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            names = list(node.type.elts) if isinstance(node.type, ast.Tuple) else [node.type]
        elif isinstance(node, ast.Call):
            names = list(node.args)
        if any(isinstance(n, ast.Name) and n.id == cls.__name__ for n in names):
            return True
    return False


def problem(cls: type[BaseException]) -> str | None:
    """Why ``cls`` may not be raised in the product, or None."""
    if issubclass(cls, FirstlineError) or qualified(cls) in LIBRARY:
        return None
    if cls.__name__.startswith("_") and cls.__module__.split(".")[0] in PACKAGES:
        home = next(m for m in product_modules() if m.name == cls.__module__)
        if caught_here(cls, home):
            return None
        return "a private exception must be caught in its own module"
    return "neither in the tree under FirstlineError nor a listed library exception"


def test_every_exception_raised_in_the_product_is_in_the_tree_or_listed() -> None:
    found: list[str] = []
    for module in product_modules():
        for line, cls in raised(module):
            why = problem(cls)
            if why is not None:
                found.append(f"{module.path.relative_to(ROOT)}:{line}: {qualified(cls)}: {why}")
        for cls in defined(module):
            why = problem(cls)
            if why is not None:
                found.append(f"{module.name}.{cls.__name__} (defined): {why}")
    assert found == []


def test_every_listed_library_exception_is_still_raised() -> None:
    used = {qualified(cls) for module in product_modules() for _, cls in raised(module)}
    used |= {qualified(cls) for module in product_modules() for cls in defined(module)}
    assert sorted(set(LIBRARY) - used) == []


_DRAWN = re.compile(r"^(?P<indent>[ │]*(?:[├└]── )?)(?P<name>[A-Z]\w+)(?:\s+(?P<text>.*))?$")
_HOME = re.compile(r"\((?P<path>[\w/]+\.py)\)\s*$")


def drawing() -> list[tuple[int, str, str | None]]:
    """(depth, class name, module path drawn beside it) of each line of the tree."""
    doc = errors.__doc__ or ""
    block = doc.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    lines = []
    for line in block.splitlines():
        match = _DRAWN.match(line.removeprefix("    "))
        assert match is not None, line
        home = _HOME.search(match["text"] or "")
        lines.append((len(match["indent"]) // 4, match["name"], home["path"] if home else None))
    return lines


def tree_classes() -> dict[str, type[FirstlineError]]:
    found: dict[str, type[FirstlineError]] = {}
    pending: list[type[FirstlineError]] = [FirstlineError]
    while pending:
        cls = pending.pop()
        if cls.__module__.split(".")[0] in PACKAGES:
            assert found.setdefault(cls.__name__, cls) is cls, f"two classes named {cls.__name__}"
        pending.extend(cls.__subclasses__())
    return found


def test_the_drawn_tree_is_the_code_s_tree() -> None:
    classes = tree_classes()
    parents: list[str] = []
    drawn = set()
    for depth, name, home in drawing():
        assert name in classes, f"{name} is drawn but is no FirstlineError"
        cls = classes[name]
        del parents[depth:]
        if parents:
            assert classes[parents[-1]] in cls.__bases__, f"{name} is not a {parents[-1]}"
        path = cls.__module__.replace(".", "/") + ".py"
        assert path == (home or "policy/errors.py"), f"{name} lives in {path}"
        parents.append(name)
        drawn.add(name)
    assert sorted(set(classes) - drawn) == []


def test_every_class_is_temporary_or_permanent() -> None:
    """Each boundary needs one answer: a class is a TempFail or a PermFail, or
    is raised only as subclasses that are (SmtpFailure)."""

    def kinds(cls: type[FirstlineError]) -> int:
        return issubclass(cls, errors.TempFail) + issubclass(cls, errors.PermFail)

    for cls in tree_classes().values():
        if cls is not FirstlineError and kinds(cls) != 1:
            assert kinds(cls) == 0 and cls.__subclasses__(), cls
            assert all(kinds(sub) == 1 for sub in cls.__subclasses__()), cls
