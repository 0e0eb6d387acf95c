"""Hand a listening socket to a command as systemd socket activation does.

    python -m bench.servers.socket_activate FD COMMAND [ARG...]

Moves the inherited descriptor FD to 3, sets LISTEN_FDS=1, LISTEN_FDNAMES and LISTEN_PID to
this process's pid, and execs COMMAND in place (same pid). Several commands
given the same socket accept from it in turn: one way to run a twistd
listener per core on one port (``--listen=systemd:domain=INET:index=0``).
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    fd = int(sys.argv[1])
    if fd != 3:
        os.dup2(fd, 3)
        os.close(fd)
    os.environ["LISTEN_FDS"] = "1"
    os.environ["LISTEN_FDNAMES"] = "listener"  # Twisted wants names and fds to agree
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.execv(sys.argv[2], sys.argv[2:])


if __name__ == "__main__":
    main()
