"""Reading the configuration file: YAML with line numbers, every problem at once.

An admin fixing a file at 3 a.m. needs ``config.yaml:14: mailboxes[2].smtp.port:
…``, not a pydantic traceback, and all of the problems in one run rather than
one per attempt. So the YAML is composed twice, once as data for the model
and once as nodes for their lines, and each validation error is turned into
a :class:`ConfigProblem` at the line of the key it is about (or the nearest
one above it), with a suggestion for a misspelt key.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from policy.config.credentials import is_reference
from policy.config.model import Config, cross_problems
from policy.config.section import LocatedError
from policy.errors import PermFail


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a configuration file, located for a human."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(PermFail):
    """The configuration file is invalid; ``problems`` lists every reason."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _line_index(
    node: yaml.Node, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], int]]:
    yield path, node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield (*path, key.value), key.start_mark.line + 1
            for sub in _line_index(value, (*path, key.value)):
                if sub[0] != (*path, key.value):
                    yield sub
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _line_index(item, (*path, index))


def _format_path(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _nearest_line(
    lines: dict[tuple[str | int, ...], int], loc: tuple[str | int, ...]
) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def parse_config(text: str, source: str = "<memory>", *, resolve_secrets: bool = True) -> Config:
    """Validate YAML text; raise :class:`ConfigError` listing every problem.

    ``resolve_secrets=False`` is for commands that only read the database:
    they must work where the relay and webhook secrets are not available.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(exc, text, source)]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(source, 1, "", "the file must be a mapping of sections")])
    lines = dict(_line_index(node)) if node is not None else {}
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    try:
        boxes = data.get("mailboxes")
        count = len(boxes) if isinstance(boxes, list) else 0
        located = tuple(lines.get(("mailboxes", i)) for i in range(count))
        return Config.model_validate(
            {**data, "source": source, "digest": digest, "mailbox_lines": located},
            context={"resolve_secrets": resolve_secrets},
        )
    except ValidationError as exc:
        problems = []
        cross_checked = False
        for error in exc.errors():
            loc = tuple(error["loc"])
            message = error["msg"]
            ctx_error = (error.get("ctx") or {}).get("error")
            if isinstance(ctx_error, LocatedError):
                loc = (*loc, *ctx_error.loc)
                message = str(ctx_error)
                cross_checked = True
            elif message.startswith("Value error, "):
                message = message[len("Value error, ") :]
            if error["type"] == "extra_forbidden":
                message = "unknown setting" + _did_you_mean(loc)
            problems.append(
                ConfigProblem(source, _nearest_line(lines, loc), _format_path(loc), message)
            )
        if not cross_checked:  # the cross-section checks did not run: run them on the data
            for loc, message in _raw_cross_problems(data):
                problems.append(
                    ConfigProblem(source, _nearest_line(lines, loc), _format_path(loc), message)
                )
        problems.sort(key=lambda p: p.line or 0)  # stable: one line's problems keep their order
        raise ConfigError(problems) from None


def _raw_cross_problems(data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    channels = data.get("channels") if isinstance(data.get("channels"), list) else []
    mailboxes = data.get("mailboxes") if isinstance(data.get("mailboxes"), list) else []
    return cross_problems(
        [c.get("name") for c in channels or [] if isinstance(c, dict)],
        [(m.get("channel"), m.get("address")) for m in mailboxes or [] if isinstance(m, dict)],
    )


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model whose fields may stand at ``loc`` (for suggestions), if any."""
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        model = next(
            (t for t in _types_in(field.annotation) if isinstance(t, type)
             and issubclass(t, BaseModel)), None,
        )  # fmt: skip
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _types_in(annotation: Any) -> Iterator[Any]:
    yield annotation
    for argument in get_args(annotation):
        yield from _types_in(argument)


def _did_you_mean(loc: tuple[str | int, ...]) -> str:
    """``; did you mean 'encryption'?`` for a misspelt key (difflib's closest field)."""
    if not loc or not isinstance(loc[-1], str):
        return ""
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    names = [n for n, f in model.model_fields.items() if not f.exclude]
    close = difflib.get_close_matches(loc[-1], names, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _yaml_problem(exc: yaml.YAMLError, text: str, source: str) -> ConfigProblem:
    """A YAML error at the line to look at, in words for someone who edited by hand."""
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if mark is not None and (problem.startswith("expected <block end>")
                             or problem == "mapping values are not allowed here"):  # fmt: skip
        lines = text.splitlines()
        here = _indent(lines[mark.line]) if mark.line < len(lines) else 0
        above = next(
            (n for n in range(mark.line - 1, -1, -1)
             if lines[n].strip() and not lines[n].lstrip().startswith("#")), None,
        )  # fmt: skip
        if above is not None and _indent(lines[above]) != here:
            return _indent_problem(lines, above, mark.line, source, problem)
    if context and context_mark is not None and context_mark.line + 1 != line:
        problem = f"{problem} ({context} at line {context_mark.line + 1})"
    return ConfigProblem(source, line, "", f"invalid YAML: {problem}")


def _indent_problem(
    lines: list[str], above: int, here: int, source: str, problem: str
) -> ConfigProblem:
    """Which of two lines is out of step: an odd indentation among even ones;
    else the first line of a block when the next one sits between it and its
    parent (the first line sets the block's indentation, so YAML only notices
    at the line after). The other line is named either way."""
    parent = next(
        (n for n in range(above - 1, -1, -1)
         if lines[n].strip() and not lines[n].lstrip().startswith("#")), None,
    )  # fmt: skip
    first_child = parent is not None and _indent(lines[parent]) < _indent(lines[above])
    spaces_above, spaces_here = _indent(lines[above]), _indent(lines[here])
    if spaces_here % 2 != spaces_above % 2:  # YAML is indented by twos: odd is out of step
        blame_above = spaces_above % 2 == 1
    else:
        blame_above = (first_child and parent is not None
                       and _indent(lines[parent]) < spaces_here < spaces_above)  # fmt: skip
    if blame_above:
        return ConfigProblem(source, above + 1, "", (
            f"invalid YAML: this line is indented by {_spaces(spaces_above)} and the next one "
            f"(line {here + 1}) by {spaces_here}: the lines of a block line up with its first"
        ))  # fmt: skip
    return ConfigProblem(source, here + 1, "", (
        f"invalid YAML: this line is indented by {_spaces(spaces_here)} but line {above + 1} "
        f"above it by {spaces_above} ({problem})"
    ))  # fmt: skip


def _spaces(count: int) -> str:
    return f"{count} space" + ("" if count == 1 else "s")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def inline_secrets(text: str, source: str = "<memory>") -> list[ConfigProblem]:
    """Secrets written into the file itself (``password: hunter2``), for a warning.

    They work, but the file then carries the secret into backups, tickets and
    version control; ``${ENV}`` and ``file:`` exist for that. The value is never
    part of the message.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []
    found: list[ConfigProblem] = []
    for loc, value, line in _scalars(node, ()) if node is not None else ():
        model = _model_at(loc[:-1])
        field = getattr(model, "model_fields", {}).get(loc[-1]) if model is not None else None
        if field is None or SecretStr not in set(_types_in(field.annotation)):
            continue
        if value and not is_reference(value):
            found.append(ConfigProblem(source, line, _format_path(loc), (
                "the secret is written in the file: use ${ENV_VAR} or file:/path/to/secret "
                "so it stays out of the file, its backups and version control"
            )))  # fmt: skip
    return found


def _scalars(
    node: yaml.Node, path: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], str, int]]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(value, yaml.ScalarNode):
                yield (*path, key.value), str(value.value), value.start_mark.line + 1
            else:
                yield from _scalars(value, (*path, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _scalars(item, (*path, index))


def load_config(path: str | os.PathLike[str], *, resolve_secrets: bool = True) -> Config:
    """Read and validate a configuration file."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem(source, None, "", f"cannot read: {exc.strerror}")]
        ) from None
    return parse_config(text, source, resolve_secrets=resolve_secrets)
