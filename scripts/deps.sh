#!/usr/bin/env bash
# Installs every Debian package segc's build and tests need. No-op when present.
set -euo pipefail
PKGS="build-essential pkg-config libdnnl-dev libopenblas-dev libjpeg62-turbo-dev libspng-dev libpng-dev
      libyaml-dev libcjson-dev libnifti2-dev zlib1g-dev libcmocka-dev libomp-dev
      libopenmpi-dev openmpi-bin"
case "${1:-}" in
  # benchmarks time PyTorch beside segc: scripts/bench_env.sh installs the pinned
  # versions from PyPI into .venv, which needs Debian's venv module
  --bench) PKGS="$PKGS python3 python3-venv python3-pip";;
  --fuzz) PKGS="$PKGS clang libclang-rt-14-dev";;
esac
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "segc: installing Debian packages:$missing" >&2
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing >&2
