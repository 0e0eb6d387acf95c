"""Fixtures shared by every test package."""

# AWS test servers (moto with IAM auth, SeaweedFS), session-scoped: tests/aws_servers.py.
from tests.aws_servers import moto_server, seaweedfs_server  # noqa: F401
