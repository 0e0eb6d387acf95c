"""Fuzz the HTTP API from docs/openapi.yaml with schemathesis against a real twistd.

One ``twistd --role=all`` (local driver, a temporary data dir, static
bearer tokens so the auth checks have something to check) on 127.0.0.1;
schemathesis runs every phase (coverage, fuzzing, stateful through the
spec's links) with every check but ``positive_data_acceptance``: that one
expects any schema-valid body to be accepted, and no schema can say "a
decodable image", so random bytes are rightly refused with 415.

Bounded: at most MAX_EXAMPLES cases per operation, a fixed seed (set
PROFILED_FUZZ_SEED to explore others), per-request and whole-run timeouts.
Inputs it once found to fail are replayed as plain tests here and in
tests/unit/test_fuzz_regressions.py.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.e2e.harness import REPO, Twistd, running

pytestmark = pytest.mark.heavy

SCHEMA = REPO / "docs" / "openapi.yaml"
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
TOKEN = "fuzz-token"
MAX_EXAMPLES = 30
RUN_TIMEOUT = 150


def fuzz_server(tmp_path: Path) -> Twistd:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    return Twistd(
        ["--role=all", f"--data-dir={tmp_path / 'var'}"],
        tmp_path,
        {
            "PROFILED_AUTH_MODE": "bearer",
            "PROFILED_AUTH_TOKENS": f"fuzzer:{digest}",
            "PROFILED_WORKER_CONCURRENCY": "1",
        },
    )


def test_schemathesis_finds_no_server_error_or_schema_violation(tmp_path: Path):
    """Every phase and check of schemathesis passes: no 5xx, every answer as the spec says."""
    server = fuzz_server(tmp_path)
    seed = os.environ.get("PROFILED_FUZZ_SEED", "1")
    cmd = [
        str(SCHEMATHESIS),
        "run",
        str(SCHEMA),
        f"--url={server.url}",
        f"--header=Authorization: Bearer {TOKEN}",
        "--checks=all",
        "--exclude-checks=positive_data_acceptance",
        f"--max-examples={MAX_EXAMPLES}",
        f"--seed={seed}",
        "--workers=1",
        "--request-timeout=10",
        "--no-color",
    ]
    with running(server):
        done = subprocess.run(
            cmd,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
        )
        log = server.log_tail(200)
    output = done.stdout[-20000:] + done.stderr[-5000:]
    assert done.returncode == 0, f"{output}\n--- twistd log ---\n{log}"
    # Exit status 0 is schemathesis' own verdict; its summary wording varies
    # between runs ("No issues found" or "N passed, M skipped"), so also make
    # sure no failure was reported in it.
    assert "FAILURES" not in done.stdout.upper().replace("NO FAILURES", ""), output
    # It really exercised the API: every operation of the spec was tested.
    assert "Tested: 10" in done.stdout, output


def test_undeclared_methods_are_json_405_not_501(tmp_path: Path):
    """Found by schemathesis: TRACE on ops and image paths got twisted.web's '501 Huh?'."""
    with running(fuzz_server(tmp_path)) as (server,):
        for path in ("/__heartbeat__", "/__lbheartbeat__", "/__version__", "/metrics"):
            for method in ("TRACE", "PUT", "DELETE", "POST"):
                r = requests.request(method, server.url + path, timeout=10)
                assert r.status_code == 405, (method, path, r.status_code)
                assert r.json()["errno"] == 121
                assert "GET" in r.headers["Allow"]
        r = requests.request("TRACE", server.url + "/a/" + "0" * 32, timeout=10)
        assert r.status_code == 405
        assert r.json()["errno"] == 121
