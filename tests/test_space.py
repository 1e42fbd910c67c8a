"""A full storage volume: mail is refused with 452 4.3.1 before a write can fail.

The store lives on a small tmpfs the test mounts, filled with a ballast file
until the guard trips, then freed.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from prometheus_client import generate_latest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from ingest.ops.metrics import scrape_registry
from policy.config.loading import parse_config
from policy.config.model import Config
from policy.errors import InsufficientStorage, StorageUnavailable
from storage.engine import storage_error
from storage.models import Rejection, StoredMessage
from storage.space import storage_folder
from tests.support.cli import run, write_config
from tests.support.mailflow import tickets
from tests.support.server import RawClient, ServerThread, running
from tests.support.signing import message
from tests.support.stores import BASE_CONFIG, merge

MiB = 1024 * 1024


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs of the test's own."""
    mount_point = tmp_path / "volume"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def free_bytes(path: Path) -> int:
    found = os.statvfs(path)
    return found.f_bavail * found.f_frsize


def fill(path: Path, leave: int) -> None:
    """Write ballast until at most ``leave`` bytes are free (0: until the disk is full)."""
    with (path / "ballast").open("ab") as ballast:
        while free_bytes(path) > leave:
            try:
                ballast.write(b"\0" * min(256 * 1024, max(free_bytes(path) - leave, 4096)))
                ballast.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.05)


def send(server: ServerThread, subject: str, size: int = 0) -> tuple[bytes, bytes]:
    """MAIL's reply and the reply after DATA (empty when MAIL was refused)."""
    client: RawClient = server.raw()
    try:
        client.cmd(b"EHLO client.example")
        mail = client.cmd(b"MAIL FROM:<alice@fine.example>")
        if not mail.startswith(b"250"):
            return mail, b""
        assert client.cmd(b"RCPT TO:<support@example.com>").startswith(b"250")
        assert client.cmd(b"DATA").startswith(b"354")
        text = ("x" * 76 + "\r\n") * (size // 78) + "end\r\n"
        body = message(sender="alice@fine.example", to="support@example.com", subject=subject,
                       body=text)  # fmt: skip
        client.send(body.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n")
        return mail, client.reply()
    finally:
        client.close()


def stored(server: ServerThread) -> int:
    with Session(server.engine) as session:
        return int(session.scalar(select(func.count()).select_from(StoredMessage)) or 0)


def on_volume(volume: Path, **storage: object) -> Config:
    url = f"sqlite:///{volume}/firstline.db"
    data = merge(BASE_CONFIG, {"storage": {"url": url, **storage}})
    config = parse_config(yaml.safe_dump(data), "test.yaml")
    assert storage_folder(config.storage.url) == volume
    return config


def test_a_low_volume_refuses_mail_and_says_so_until_space_comes_back(
    volume: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{volume}/firstline.db"
    config_path = write_config(tmp_path / "firstline.yaml", url, storage={"url": url,
                               "min_free": 4 * MiB})  # fmt: skip
    config = parse_config(config_path.read_text(), str(config_path))
    with running(config) as server:
        assert send(server, "before")[1].startswith(b"250")
        checks = server.call(server.app.health())
        assert checks["disk"] == "ok"

        fill(volume, leave=3 * MiB)
        wait_until(lambda: server.call(server.app.health())["disk"] != "ok", "saw the disk low")
        mail, _ = send(server, "while low")
        assert mail.startswith(b"452 4.3.1 Insufficient system storage"), mail
        server.flush()
        with Session(server.engine) as session:
            [refusal] = session.scalars(select(Rejection)).all()
        assert (refusal.stage, refusal.reason, refusal.mail_from) == (
            "MAIL", "insufficient_storage", "alice@fine.example"
        )  # fmt: skip
        assert server.call(server.app.health())["disk"].startswith("low: ")
        scraped = generate_latest(scrape_registry(server.engine, server.app.space)).decode()
        assert "firstline_storage_min_free_bytes 4.194304e+06" in scraped
        [free_line] = [x for x in scraped.splitlines() if x.startswith("firstline_storage_free")]
        assert float(free_line.split()[1]) < 4 * MiB
        shown = run("status", config=config_path)
        assert shown.exit_code == 0, shown.output
        assert "refusing mail under 4.0 MiB): LOW" in shown.stdout
        assert "insufficient_storage 1" in shown.stdout
        status_json = run("status", "--json", config=config_path)
        assert '"low": true' in status_json.stdout
        # The batch keeps running: turning mail into tickets is how space comes back.
        server.process()
        assert [t["subject"] for t in tickets(server)] == ["before"]

        (volume / "ballast").unlink()
        wait_until(lambda: server.call(server.app.health())["disk"] == "ok", "saw space again")
        assert send(server, "after")[1].startswith(b"250")
    assert "): ok" in run("status", config=config_path).stdout


def test_a_full_disk_at_commit_is_452_and_leaves_nothing_half_written(volume: Path) -> None:
    """The guard off (min_free 0), the disk filled to the last byte: SQLite's
    SQLITE_FULL maps to 452 4.3.1 at the storage boundary, and the message
    that did not fit leaves no trace once space is back."""
    config = on_volume(volume, min_free=0)
    with running(config) as server:
        assert send(server, "fits")[1].startswith(b"250")
        fill(volume, leave=0)
        mail, reply = send(server, "does not fit", size=900 * 1024)
        assert mail.startswith(b"250")  # the guard is off: only the commit can tell
        assert reply.startswith(b"452 4.3.1 Insufficient system storage"), reply
        (volume / "ballast").unlink()
        assert stored(server) == 1
        assert send(server, "fits again", size=900 * 1024)[1].startswith(b"250")
        assert stored(server) == 2


def test_postgresql_disk_full_maps_to_452_at_the_storage_boundary() -> None:
    """The PostgreSQL server's disk is not ours to fill; its error is (SQLSTATE 53100)."""
    full = OperationalError("INSERT …", {}, psycopg.errors.DiskFull("could not extend file"))
    assert isinstance(storage_error(full), InsufficientStorage)
    gone = OperationalError("INSERT …", {}, psycopg.errors.AdminShutdown("terminating"))
    assert type(storage_error(gone)) is StorageUnavailable
