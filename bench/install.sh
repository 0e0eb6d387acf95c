#!/bin/sh
# Install what the benchmarks need, on a fresh Debian machine (root or sudo):
# wrk and nginx from Debian, pyvips-binary (+ pyvips) and py-spy into .venv,
# thumbor 7 into its own virtualenv under bench/.work/ (never into .venv).
set -eu
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

missing=""
command -v wrk >/dev/null || missing="$missing wrk"
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$missing nginx-light"
command -v taskset >/dev/null || missing="$missing util-linux"
if [ -n "$missing" ]; then
    echo "bench: apt-get install$missing"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

"$VENV/bin/python" -c 'import pyvips' 2>/dev/null \
    || "$VENV/bin/pip" install --quiet 'pyvips-binary>=8.15' 'pyvips>=2.2'

THUMBOR_VENV=bench/.work/thumbor-venv
if [ ! -x "$THUMBOR_VENV/bin/thumbor" ]; then
    echo "bench: installing thumbor 7 into $THUMBOR_VENV"
    mkdir -p bench/.work
    python3 -m venv "$THUMBOR_VENV"
    "$THUMBOR_VENV/bin/pip" install --quiet --upgrade pip
    "$THUMBOR_VENV/bin/pip" install --quiet 'thumbor>=7,<8'
fi
