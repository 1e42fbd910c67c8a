"""The ClamAV backend against a real clamd, and the batch's scanning step."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from ingest.work.clamd import ClamdClient, ClamdReply, ClamdStatus, ClamdUnavailable
from ingest.work.scanning import scan_message
from policy.antivirus import EICAR, Outcome
from policy.config.model import AntivirusConfig
from policy.errors import ScannerUnavailable
from tests.support.clamd_server import (
    EICAR_NAME,
    MARKER,
    MARKER_NAME,
    STREAM_MAX_LENGTH,
    free_port,
    running_clamd,
)
from tests.support.corpus.cases import attached


@pytest.fixture(scope="module", params=["unix", "tcp"])
def clamd_address(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    directory = tmp_path_factory.mktemp(f"clamd-{request.param}")
    with running_clamd(directory, tcp=request.param == "tcp") as address:
        yield address


def clamd_config(address: str, on_unavailable: str = "wait") -> AntivirusConfig:
    return AntivirusConfig.model_validate(
        {"backend": "clamd", "clamd": address, "timeout": 20, "on_unavailable": on_unavailable}
    )


# --- the INSTREAM client ---------------------------------------------------------


async def test_clean_data(clamd_address: str) -> None:
    reply = await ClamdClient(clamd_address, 20).instream(b"just a friendly question" * 10_000)
    assert reply == ClamdReply(ClamdStatus.OK)


async def test_eicar_found(clamd_address: str) -> None:
    reply = await ClamdClient(clamd_address, 20).instream(EICAR)
    assert reply == ClamdReply(ClamdStatus.FOUND, EICAR_NAME)


async def test_signature_across_chunk_boundary(clamd_address: str) -> None:
    from ingest.work.clamd import CHUNK_SIZE

    data = b"a" * (CHUNK_SIZE - len(MARKER) // 2) + MARKER + b"b" * 1000
    reply = await ClamdClient(clamd_address, 20).instream(data)
    assert reply == ClamdReply(ClamdStatus.FOUND, MARKER_NAME)


@pytest.mark.parametrize("clamd_address", ["tcp"], indirect=True)
async def test_host_name(clamd_address: str) -> None:
    address = clamd_address.replace("127.0.0.1", "localhost")
    assert (await ClamdClient(address, 20).instream(EICAR)).signature == EICAR_NAME


async def test_empty_stream(clamd_address: str) -> None:
    assert (await ClamdClient(clamd_address, 20).instream(b"")).status is ClamdStatus.OK


@pytest.mark.parametrize("size", [STREAM_MAX_LENGTH + 1, 4 * STREAM_MAX_LENGTH])
async def test_stream_larger_than_clamd_accepts(clamd_address: str, size: int) -> None:
    reply = await ClamdClient(clamd_address, 20).instream(b"x" * size)
    assert reply == ClamdReply(ClamdStatus.SIZE_LIMIT)


async def test_unix_socket_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ClamdUnavailable, match="unreachable"):
        await ClamdClient(str(tmp_path / "absent.sock"), 5).instream(b"data")


async def test_tcp_port_with_nobody_listening() -> None:
    with pytest.raises(ScannerUnavailable, match="unreachable"):
        await ClamdClient(f"127.0.0.1:{free_port()}", 5).instream(b"data")


@contextlib.asynccontextmanager
async def fake_clamd(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A loopback server misbehaving as ``handle`` says; connections end with the test."""
    handlers: set[asyncio.Task[None]] = set()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())
        try:
            await handle(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    async with server:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    await asyncio.gather(*handlers)


async def test_timeout() -> None:
    """A clamd that reads and never answers (stuck reloading a huge database)."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass

    async with fake_clamd(swallow) as address:
        with pytest.raises(ClamdUnavailable, match=r"did not answer within 0\.2s"):
            await ClamdClient(address, 0.2).instream(b"data")


async def test_error_reply_means_try_again() -> None:
    async def out_of_memory(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"Can't allocate memory ERROR\0")
        await writer.drain()

    async with fake_clamd(out_of_memory) as address:
        with pytest.raises(ClamdUnavailable, match="Can't allocate memory ERROR"):
            await ClamdClient(address, 5).instream(b"data")


# --- the batch's scanning step --------------------------------------------------------


async def test_scan_message_clean_with_clamd(clamd_address: str) -> None:
    result = await scan_message(
        attached(body="Hello, the printer is on fire."), clamd_config(clamd_address)
    )
    assert (result.outcome, result.scanner) == (Outcome.CLEAN, "builtin+clamd")


async def test_scan_message_infected_by_clamd(clamd_address: str) -> None:
    raw = attached(("notes.txt", b"notes " + MARKER + b" more notes"))
    result = await scan_message(raw, clamd_config(clamd_address))
    assert (result.outcome, result.reason, result.signature, result.scanner) == (
        Outcome.INFECTED,
        "virus",
        MARKER_NAME,
        "clamd",
    )
    assert not result.passes


async def test_builtin_policy_applies_with_clamd_too(clamd_address: str) -> None:
    result = await scan_message(attached(("setup.exe", b"hello")), clamd_config(clamd_address))
    assert (result.reason, result.scanner) == ("blocked_attachment", "builtin")


async def test_message_larger_than_clamd_accepts_is_blocked(clamd_address: str) -> None:
    raw = attached(("log.txt", b"line of log\n" * (STREAM_MAX_LENGTH // 8)))
    result = await scan_message(raw, clamd_config(clamd_address))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, "scan_size_limit")


async def test_clamd_down_means_the_message_waits(tmp_path: Path) -> None:
    with pytest.raises(ScannerUnavailable):
        await scan_message(attached(), clamd_config(str(tmp_path / "gone.sock")))


async def test_clamd_down_with_pass_policy_passes_marked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mail.antivirus"):
        result = await scan_message(
            attached(), clamd_config(str(tmp_path / "gone.sock"), on_unavailable="pass")
        )
    assert (result.outcome, result.scanner) == (Outcome.UNSCANNED, "clamd")
    assert result.passes
    assert "unscanned" in caplog.text


async def test_clamd_down_with_pass_policy_still_applies_builtin(tmp_path: Path) -> None:
    result = await scan_message(
        attached(("eicar.com", EICAR)), clamd_config(str(tmp_path / "gone.sock"), "pass")
    )
    assert (result.outcome, result.reason) == (Outcome.INFECTED, "virus")


async def test_builtin_backend_needs_no_daemon() -> None:
    result = await scan_message(attached(("eicar.com.txt", EICAR)), AntivirusConfig())
    assert (result.outcome, result.signature, result.scanner) == (
        Outcome.INFECTED,
        "EICAR-Test-File",
        "builtin",
    )
