"""What only the API says: request bodies, pages, lists and health.

The documents themselves (a ticket, a reply, a rejection, a trace) are
:mod:`storage.documents`, shared with the CLI's ``--json`` and webhook
payloads; these wrap or feed them. Request bodies are bounded by their field
limits (422 beyond them), and header-bound fields (Cc) refuse CR and LF
outright rather than folding them away.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ingest.outbound.compose import InvalidReply, parse_address
from storage.documents import RejectionOut, TicketStatus, TicketSummaryOut

MAX_TEXT = 512 * 1024


class TicketPage(BaseModel):
    tickets: list[TicketSummaryOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class ReplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, max_length=MAX_TEXT)
    html: str | None = Field(default=None, max_length=MAX_TEXT)
    cc: list[Annotated[str, Field(min_length=3, max_length=320)]] = Field(
        default_factory=list, max_length=20
    )

    @field_validator("cc")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        # The check compose applies when it writes the Cc field: one reading of
        # an address, so the API can neither refuse what would be sent nor accept
        # what compose would then refuse at send time.
        for value in values:
            try:
                parse_address(value)
            except InvalidReply as exc:
                raise ValueError(str(exc)) from None
        return [v.strip() for v in values]

    @model_validator(mode="after")
    def _some_body(self) -> ReplyIn:
        if not (self.text or "").strip() and not (self.html or "").strip():
            raise ValueError("a reply needs text or html")
        return self


class TicketPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: TicketStatus


class RejectionList(BaseModel):
    rejections: list[RejectionOut]


class HealthOut(BaseModel):
    status: Literal["ok", "fail"]
    checks: dict[str, str]
