#!/usr/bin/env bash
# Installs what building and testing darksidesync needs, from Debian's
# packages (Debian 12). Run as root (or with sudo available). Does nothing
# when everything is already there.
set -euo pipefail

PACKAGES=(
  g++ gcc make cmake pkg-config
  lua5.1 lua5.2 lua5.3 lua5.4 luajit
  liblua5.1-0-dev liblua5.2-dev liblua5.3-dev liblua5.4-dev libluajit-5.1-dev
  catch2 lua-socket luarocks lua-copas lua-coxpcall valgrind
  clang libclang-rt-14-dev
  lua-luv gnuplot-nox lua-cqueues
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo
  else echo "install-deps: run as root to install: ${missing[*]}" >&2; exit 1; fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
