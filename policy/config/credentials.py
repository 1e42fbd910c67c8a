"""Where secrets come from: ``${ENV}`` references and ``file:`` paths.

Relay passwords, webhook secrets and OAuth credentials are resolved into
:class:`pydantic.SecretStr`, so they cannot leak through ``repr``, logs or
``check-config``; every error message names the variable or the file, never
a value. Written into the file itself a secret works, but travels with the
file into backups and version control: ``check-config`` warns about it
(:func:`policy.config.loading.inline_secrets`), and the most powerful ones
(OAuth credentials) and the console's passwords (hashes only) refuse it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, SecretStr, ValidationInfo

_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_ENV_IN_PATH = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def is_reference(value: str) -> bool:
    """``${NAME}`` or ``file:PATH``: where a secret is kept, not the secret."""
    return bool(_ENV_REF.match(value.strip())) or value.startswith("file:")


def resolve_secret(value: Any, info: ValidationInfo) -> Any:
    """Turn ``${NAME}`` into the environment's value and ``file:PATH`` into the file's.

    ``PATH`` may name variables too: ``file:${CREDENTIALS_DIRECTORY}/smtp-password``
    reads a credential systemd passed with ``LoadCredential=``. The error
    messages name the variable or file, never a value. Read with
    ``resolve_secrets=False`` (commands that send nothing), references stay
    unresolved: :data:`UNRESOLVED`, which no server will take for a password.
    """
    if not isinstance(value, str):
        return value
    if (info.context or {}).get("resolve_secrets") is False:
        return UNRESOLVED if is_reference(value) else value
    match = _ENV_REF.match(value.strip())
    if match:
        return _env_value(match)
    if value.startswith("file:"):
        path = Path(_ENV_IN_PATH.sub(_env_value, value[len("file:") :])).expanduser()
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
    return value


def _env_value(match: re.Match[str]) -> str:
    name = match.group(1)
    if name not in os.environ:
        raise ValueError(f"environment variable {name} is not set")
    return os.environ[name]


# What an unresolved secret reads as: not a value anyone configured.
UNRESOLVED = "\x00unresolved secret\x00"
Secret = Annotated[SecretStr, BeforeValidator(resolve_secret)]


def _reference_only(value: Any, info: ValidationInfo) -> Any:
    """OAuth credentials are long-lived and powerful: refuse them written into the file."""
    if isinstance(value, str) and not is_reference(value):
        raise ValueError("give this as ${ENV_VAR} or file:PATH, not the secret itself")
    return resolve_secret(value, info)


ReferencedSecret = Annotated[SecretStr, BeforeValidator(_reference_only)]


_PASSWORD_HASH = re.compile(r"^\$(argon2(id|i|d)\$|2[aby]\$)")


def _hash_or_reference(value: Any, info: ValidationInfo) -> Any:
    """A password written in the file must be a hash; a plain one only via ``${ENV}``/``file:``."""
    if isinstance(value, str) and not is_reference(value) and not _PASSWORD_HASH.match(value):
        raise ValueError(
            "write an argon2 or bcrypt hash (firstline console-password prints one), "
            "or a ${ENV} / file: reference"
        )
    return resolve_secret(value, info)


HashedPassword = Annotated[SecretStr, BeforeValidator(_hash_or_reference)]
