#!/usr/bin/env bash
# Runs the steps of deploy/Dockerfile without a container engine, for machines that have none (the
# one metaids is built on has no Docker engine and no image registry). It is not `docker build`:
# the two images are stood in for by Debian bookworm trees made by debootstrap (minbase, as
# debian:bookworm-slim is), each stage's RUN, COPY, WORKDIR and USER steps are read out of the
# Dockerfile and carried out in its tree in order (RUN with `sh -c`, as Docker runs it), and the
# built binary then runs in the second tree as the Dockerfile's USER with the example config,
# answering the Dockerfile's HEALTHCHECK command, scoring a capture dropped into the spool
# directory and stopping on the STOPSIGNAL. What differs from Docker: the build stage's Rust
# toolchain is this machine's (rust:1.90-bookworm brings 1.90; the workspace's rust-version is
# 1.90, no dependency asks for more, and clippy's incompatible_msrv lint holds the code to it);
# there are no namespaces (the service listens on this machine's loopback, port 9330, which must
# be free); the volumes are plain directories of the tree.
#
# Needs: root, debootstrap, the Debian mirror and crates.io reachable, rustc/cargo on PATH.
# Usage: sudo deploy/check-container-steps.sh [WORKDIR (default /tmp/metaids-container-check)]
# Takes about 10 minutes on 2 cores (most of it the release build); the trees stay in WORKDIR
# (a second run reuses the debootstrap tree).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=${1:-/tmp/metaids-container-check}
DOCKERFILE=$ROOT/deploy/Dockerfile
SYSROOT=$(rustc --print sysroot)
mkdir -p "$W"

say() { printf '== %s\n' "$*"; }

# One stage's instructions in order (continuation lines joined), `KEYWORD<TAB>arguments` a line.
steps_of() {
  python3 - "$DOCKERFILE" "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read().replace("\\\n", " ")
stage, want = None, sys.argv[2]
for line in text.splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    word, _, rest = line.partition(" ")
    if word == "FROM":
        m = re.search(r"\bAS\s+(\S+)", rest, re.I)
        stage = m.group(1) if m else "final"
    elif stage == want:
        print(word + "\t" + re.sub(r"\s+", " ", rest))
PY
}

# The HEALTHCHECK command (its JSON exec form), NUL-separated.
healthcheck() {
  python3 - "$DOCKERFILE" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read().replace("\\\n", " ")
m = re.search(r"^HEALTHCHECK\b.*?\bCMD\s+(\[.*\])\s*$", text, re.M)
sys.stdout.write("\0".join(json.loads(m.group(1))))
PY
}

mounts=()
mount_in() {
  local t=$1 d
  for d in proc sys dev; do
    mount --bind "/$d" "$t/$d"
    mounts+=("$t/$d")
  done
  cp /etc/resolv.conf "$t/etc/resolv.conf"
}
SERVE_PID=
cleanup() {
  if [ -n "$SERVE_PID" ]; then kill "$SERVE_PID" 2>/dev/null || true; fi
  local m
  for m in "${mounts[@]}"; do umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT

# Carries out stage $1's RUN, COPY, WORKDIR and USER steps in tree $2; RUN under the command
# prefix that follows (an `env -i …`).
run_stage() {
  local stage=$1 tree=$2 workdir=/ word args src dst from p
  shift 2
  while IFS=$'\t' read -r word args; do
    case $word in
      RUN)
        say "RUN ${args:0:110}"
        chroot "$tree" "$@" sh -c "cd $workdir && $args"
        ;;
      WORKDIR)
        workdir=$args
        mkdir -p "$tree$workdir"
        ;;
      USER)
        say "USER $args (the image's command runs as it below)"
        ;;
      COPY)
        from=$ROOT
        if [[ "$args" == --from=* ]]; then
          from=${args%% *}
          from=$W/${from#--from=}
          args=${args#* }
        fi
        src=${args% *}
        dst=${args##* }
        [[ "$dst" == /* ]] || dst=$workdir/$dst
        say "COPY $src -> $dst (from ${from#"$W/"})"
        if [ "$src" = . ]; then
          # The build context without .dockerignore's paths.
          local excludes=()
          while IFS= read -r p; do
            p=${p%/}
            if [ -n "$p" ] && [[ "$p" != \#* ]]; then excludes+=("--exclude=./$p"); fi
          done < "$ROOT/.dockerignore"
          mkdir -p "$tree$dst"
          tar -C "$from" "${excludes[@]}" -cf - . | tar -C "$tree$dst" -xf -
        else
          install -D "$from/$src" "$tree$dst"
        fi
        ;;
      *) ;;
    esac
  done < <(steps_of "$stage")
}

if [ ! -x "$W/base/bin/sh" ]; then
  say "debootstrap bookworm (minbase) into $W/base"
  debootstrap --variant=minbase bookworm "$W/base" http://deb.debian.org/debian > "$W/debootstrap.log"
fi

say "build stage ($W/build): what rust:1.90-bookworm has (a C toolchain, pkg-config, curl, git), this machine's Rust"
rm -rf "$W/build"
cp -a "$W/base" "$W/build"
mount_in "$W/build"
chroot "$W/build" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends build-essential pkg-config ca-certificates curl git > /dev/null'
mkdir -p "$W/build/usr/local/rust"
cp -a "$SYSROOT/." "$W/build/usr/local/rust/"
# This machine's certificate authorities for cargo's downloads (where crates.io is reached through
# a TLS-inspecting proxy, only the host's bundle has its authority).
cp /etc/ssl/certs/ca-certificates.crt "$W/build/usr/local/share/host-ca.crt"
run_stage build "$W/build" env -i HOME=/root PATH=/usr/local/rust/bin:/usr/local/bin:/usr/bin:/bin \
  CARGO_HOME=/usr/local/cargo CARGO_HTTP_CAINFO=/usr/local/share/host-ca.crt FEATURES=
[ -x "$W/build/usr/local/bin/metaids" ] || { echo "the build stage left no /usr/local/bin/metaids"; exit 1; }

say "final stage ($W/run): debian:bookworm-slim's stand-in"
rm -rf "$W/run"
cp -a "$W/base" "$W/run"
mount_in "$W/run"
run_stage final "$W/run" env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
chroot "$W/run" ldd /usr/local/bin/metaids | sed 's/^/   /'

say "volumes: the example config, a model and a threat (made by the image's binary, as user metaids)"
install -m 0644 "$ROOT/examples/metaids.toml" "$W/run/etc/metaids/metaids.toml"
mkdir -p "$W/run/tmp/data"
cp -a "$ROOT/data/cic-ids2017" "$ROOT/data/pcaps" "$W/run/tmp/data/"
chmod -R a+rX "$W/run/tmp/data"
AS_USER=(chroot --userspec=metaids:metaids "$W/run" env -i HOME=/var/lib/metaids
  PATH=/usr/local/bin:/usr/bin:/bin METAIDS_LOG=info)
"${AS_USER[@]}" sh -c 'cd /var/lib/metaids && metaids train --dataset cic --data /tmp/data/cic-ids2017 --out /var/lib/metaids/cic.model --quiet > /dev/null'
"${AS_USER[@]}" metaids threat add --model /var/lib/metaids/cic.model --library /var/lib/metaids/lib.redb \
  --name ssh-guessing --pcap /tmp/data/pcaps/sshguess.pcap --select "dport 22" --enrol-shots 5 --force > /dev/null

say "CMD serve --config /etc/metaids/metaids.toml, as USER metaids (uid $(chroot "$W/run" id -u metaids))"
"${AS_USER[@]}" metaids serve --config /etc/metaids/metaids.toml > "$W/serve.out" 2> "$W/serve.err" &
SERVE_PID=$!
for _ in $(seq 1 200); do
  if grep -q listening "$W/serve.out" 2>/dev/null; then break; fi
  sleep 0.1
done
grep listening "$W/serve.out"
mapfile -d '' HC < <(healthcheck)
say "HEALTHCHECK ${HC[*]}"
if "${AS_USER[@]}" "${HC[@]}"; then echo "   healthy"; else echo "   the health check failed"; exit 1; fi
say "a capture dropped into the spool directory"
SPOOL=$W/run/var/spool/metaids/pcaps
cp "$ROOT/data/pcaps/sshguess.pcap" "$SPOOL/.sshguess.pcap"
chown 10001:10001 "$SPOOL/.sshguess.pcap"
mv "$SPOOL/.sshguess.pcap" "$SPOOL/sshguess.pcap"
EVE=$W/run/var/log/metaids/eve.json
for _ in $(seq 1 300); do
  if grep -q '"ssh-guessing"' "$EVE" 2>/dev/null; then break; fi
  sleep 0.1
done
echo "   $(grep -c '"event_type":"alert"' "$EVE" || true) alerts in /var/log/metaids/eve.json, $(grep -c '"ssh-guessing"' "$EVE" || true) naming ssh-guessing"
stat -c '   owner %u:%g, mode %a: %n' "$EVE" "$W/run/var/lib/metaids/lib.redb"
for f in "$EVE" "$W/run/var/lib/metaids/lib.redb"; do
  [ "$(stat -c %u "$f")" = "$(chroot "$W/run" id -u metaids)" ] || { echo "$f is not the service user's"; exit 1; }
done
say "STOPSIGNAL SIGTERM"
kill -TERM "$SERVE_PID"
rc=0
wait "$SERVE_PID" || rc=$?
SERVE_PID=
echo "   serve exited with $rc"
[ "$rc" = 0 ] || exit 1
grep -q '"ssh-guessing"' "$EVE" || { echo "no ssh-guessing alert"; exit 1; }
say "every step of deploy/Dockerfile ran"
