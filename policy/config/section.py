"""What every section of the configuration file shares.

Sections are frozen, because one loaded :class:`~policy.config.model.Config`
is shared by every task and a reload replaces it whole; and they refuse
unknown keys, because a misspelt setting silently ignored is a setting the
admin believes in and does not have.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocatedError(ValueError):
    """A cross-field error that knows which field it belongs to.

    A ``ValueError`` because that is what pydantic turns into a validation
    error when a validator raises it; :func:`policy.config.loading.parse_config`
    takes ``loc`` from it to point at the field's line, not the section's.
    """

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        self.loc = loc
        super().__init__(message)
