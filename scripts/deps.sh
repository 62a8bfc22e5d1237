#!/usr/bin/env bash
# deps.sh — installs every system dependency (Debian 12) and the npm packages. Idempotent, quiet
# when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(clang llvm libbpf-dev bpftool iptables iproute2 haproxy libcap2-bin make gcc libc6-dev python3 util-linux)
# DNS capture tests: dnsmasq (the binary only, no system service) as nameserver and DNS proxy; dig.
pkgs+=(dnsmasq-base bind9-dnsutils)
# The container image (make image, its kernel test): podman with Debian's runc, debootstrap for the base.
pkgs+=(podman runc debootstrap)
# prometheus: the kernel tests scrape the agent with a real server (and promtool lints the exposition).
pkgs+=(prometheus)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "deps: need root to install: ${missing[*]}" >&2; exit 1; }
  echo "deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Only its binaries are wanted: the package's own server (on :9090) is not started at boot.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

# Exactly the committed lock file (it carries every platform's optional packages, so npm ci accepts it
# and a fresh clone stays clean). Skipped when node_modules already matches the lock.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
