"""``profiled-admin`` without AWS: argument handling and the local driver's dead letters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from profiled.admin import main

#: The code under test, first on the path even when profiled is not installed.
REPO = str(Path(__file__).resolve().parents[2])


def admin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "profiled.admin", *args],
        env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_command_is_required(capsys):
    """Without a subcommand the usage is printed and the exit status is 2."""
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
    assert "setup-aws" in capsys.readouterr().err


def test_bad_config_names_the_key(tmp_path, capsys):
    """A config error is one line naming the key, and status 1."""
    config = tmp_path / "bad.toml"
    config.write_text("[worker]\nmax_attempts = 0\n")
    assert main(["setup-aws", "--config", str(config)]) == 1
    assert capsys.readouterr().err.startswith("profiled-admin: worker.max_attempts:")


@pytest_twisted.ensureDeferred
async def test_local_dead_letters_list_and_redrive(tmp_path: Path):
    """With the local driver, dead letters are listed and moved back to the queue."""
    from profiled.drivers.local.queue import LocalQueue

    queue = LocalQueue(tmp_path / "queue", reactor, visibility_timeout=30, max_receives=1)
    await queue.send("poison")
    [msg] = await queue.receive(max_messages=1, wait=1)
    await queue.release(msg)
    assert await queue.receive(max_messages=1, wait=0.2) == []

    args = ("--driver", "local", "--data-dir", str(tmp_path))
    listed = admin("dead-letters", "list", "--json", *args)
    assert listed.returncode == 0, listed.stderr
    [dead] = json.loads(listed.stdout)
    assert dead["body"] == "poison"

    moved = admin("dead-letters", "redrive", *args)
    assert moved.returncode == 0, moved.stderr
    assert "1 dead letter sent back" in moved.stdout
    [again] = await queue.receive(max_messages=1, wait=1)
    assert again.body == "poison"
    await queue.ack(again)
