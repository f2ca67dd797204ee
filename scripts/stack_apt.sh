#!/usr/bin/env bash
# Debian packages that `make test-stack` needs: redis-server (the Celery broker), chromium and
# chromium-driver (the browser the tests drive). Installed with apt-get when missing; as root
# (CI), or through sudo.
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
# The redis-server package starts a system service; the stack runs its own on another port.
$sudo service redis-server stop >/dev/null 2>&1 || true
