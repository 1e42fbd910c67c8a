"""``firstline backup``: a consistent, verified SQLite copy taken under load."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import yaml

from policy.config.loading import parse_config
from tests.support.cli import run, write_config
from tests.support.server import ServerThread, running
from tests.support.signing import message
from tests.support.stores import BASE_CONFIG, merge


def test_a_backup_under_load_opens_with_its_tickets(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/live/firstline.db"
    config_path = write_config(tmp_path / "firstline.yaml", url)
    config = parse_config(config_path.read_text(), str(config_path))
    replies: list[int] = []
    stop = threading.Event()
    sending = threading.Event()

    def send(server: ServerThread) -> None:
        n = 0
        while not stop.is_set():
            with server.smtp() as client:
                for _ in range(30):  # a session may repeat a command 100 times
                    n += 1
                    raw = message(sender="alice@fine.example", to="support@example.com",
                                  subject=f"during the backup {n}")  # fmt: skip
                    replies.append(250 if not client.sendmail(
                        "alice@fine.example", ["support@example.com"], raw) else 0)  # fmt: skip
                    sending.set()
                    if stop.is_set():
                        break

    with running(config) as server:
        for n in range(3):
            with server.smtp() as client:
                raw = message(sender="alice@fine.example", to="support@example.com",
                              subject=f"before the backup {n}")  # fmt: skip
                client.sendmail("alice@fine.example", ["support@example.com"], raw)
        server.process()
        sender = threading.Thread(target=send, args=(server,), daemon=True)
        sender.start()
        assert sending.wait(30)
        target = tmp_path / "backups" / "firstline-copy.db"
        target.parent.mkdir()
        made = run("backup", str(target), "--json", config=config_path)
        during = len(replies)
        stop.set()
        sender.join(60)
        assert made.exit_code == 0, made.output
        assert json.loads(made.stdout)["integrity"] == "ok"
        again = run("backup", str(target), config=config_path)
        assert again.exit_code == 1 and "exists" in again.output  # never over a backup
    assert during > 0 and set(replies) == {250}
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no partial files

    with sqlite3.connect(target) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    # Restore is: put the copy where storage.url points (docs/operators.md).
    restored = write_config(tmp_path / "restored.yaml", f"sqlite:///{target}")
    listed = run("tickets", "list", "--json", config=restored)
    assert listed.exit_code == 0, listed.output
    subjects = sorted(json.loads(line)["subject"] for line in listed.stdout.splitlines())
    assert subjects == [f"before the backup {n}" for n in range(3)]


def test_backup_refuses_postgresql_and_names_pg_dump(tmp_path: Path) -> None:
    data = merge(BASE_CONFIG, {"storage": {"url": "postgresql+psycopg://db.invalid/firstline"}})
    config_path = tmp_path / "firstline.yaml"
    config_path.write_text(yaml.safe_dump(data), encoding="utf-8")
    refused = run("backup", str(tmp_path / "copy.db"), config=config_path)
    assert refused.exit_code == 1 and "pg_dump" in refused.output
    assert not (tmp_path / "copy.db").exists()
