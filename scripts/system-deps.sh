#!/usr/bin/env bash
# Debian packages the platform uses: Prometheus (metrics history), Chromium (browser tests), and redis-tools
# (its redis-check-rdb is the Redis server: the gateway replicas' shared rate-limit store in the Kubernetes tests;
# the package starts no service, unlike redis-server).
# Installed with apt-get where it exists and we are root; otherwise say what is missing and go on.
set -u
want=()
command -v prometheus >/dev/null 2>&1 || want+=(prometheus)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
command -v redis-check-rdb >/dev/null 2>&1 || command -v redis-server >/dev/null 2>&1 || want+=(redis-tools)
[ ${#want[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: apt-get not found; without ${want[*]} some features and tests are skipped" >&2
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "note: run as root (or: sudo apt-get install ${want[*]}) to install ${want[*]}" >&2
  exit 0
fi
echo "installing Debian packages: ${want[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${want[@]}" >/dev/null 2>&1 \
  || echo "warning: apt-get install ${want[*]} failed; continuing without it" >&2
# The Debian prometheus package starts a system service on :9090; the platform runs its own.
if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus >/dev/null 2>&1 || true; fi
exit 0
