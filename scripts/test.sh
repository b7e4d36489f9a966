#!/usr/bin/env bash
# Installs the system packages the tests need, then runs ruff, mypy and pytest; where it can, inside a
# fresh network namespace with only `lo` up, so no test can send a packet off the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv

need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v ffprobe >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v tc >/dev/null 2>&1 || need_apt+=(iproute2)
# Random loss on test links: tc netem where the kernel has it, else nftables' `numgen random` drop rule.
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
# TURN tests relay through Debian's coturn on loopback (tests/integration/deploy/test_turn.py).
command -v turnserver >/dev/null 2>&1 || need_apt+=(coturn)
# Cluster and shared-store tests start their own Debian redis-server on loopback (tests/redis_server.py).
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need_apt[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    # the tests start their own turnserver on loopback; never leave Debian's system-wide one running
    if command -v systemctl >/dev/null 2>&1; then
      systemctl disable --now coturn >/dev/null 2>&1 || true
      systemctl disable --now redis-server >/dev/null 2>&1 || true  # same for Redis
    fi
    # without systemd the package's init script may have started one: stop it (the tests use their own)
    if [ -x /etc/init.d/redis-server ]; then /etc/init.d/redis-server stop >/dev/null 2>&1 || true; fi
  else
    echo "warning: ${need_apt[*]} missing and apt-get unavailable: the tests that need them skip" >&2
  fi
fi

echo "== ruff"
"$VENV/bin/ruff" check .
echo "== mypy"
"$VENV/bin/mypy"

echo "== pytest"
pytest_cmd=("$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@")
rc=0
if [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then
  echo "(inside a fresh network namespace: only lo is up)"
  unshare --net bash -c 'ip link set lo up && exec "$@"' _ "${pytest_cmd[@]}" || rc=$?
else
  "${pytest_cmd[@]}" || rc=$?
fi
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests" >&2
  rc=0
fi
exit "$rc"
