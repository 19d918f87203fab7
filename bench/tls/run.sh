#!/usr/bin/env bash
# HTTPS against plain HTTP at a restart, measured the same way in the same run: the release
# counter with TLS_CERT/TLS_KEY, four Python keep-alive clients (tests/clients/https_load.py)
# through N restarts, alternately on the plain and the HTTPS listener, R rounds; prints the
# accept gap (hotrestart's own figure from its "handed over" lines), the acknowledged requests,
# the server-asked reconnects and the failures of each run. Everything listens on 127.0.0.1.
#   bench/tls/run.sh [restarts=20] [rounds=3]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
restarts="${1:-20}"
rounds="${2:-3}"
cd "$root"
cargo build -q --release --example counter
work="$(mktemp -d)"
trap 'kill "$(cat "$work/pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$work"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/key.pem" \
    -out "$work/cert.pem" -days 2 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 2>/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
echo "| run | listener | requests acknowledged | server-asked reconnects | failed | accept gap median / max ms |"
echo "|---|---|---|---|---|---|"
for round in $(seq "$rounds"); do
    for mode in plain https; do
        http=$(free_port); https=$(free_port)
        rm -f "$work/log" "$work/state"
        PORT=$http TLS_PORT=$https TLS_CERT="$work/cert.pem" TLS_KEY="$work/key.pem" \
            HOTRESTART_SUPERVISOR=0 HOTRESTART_STATE_FILE="$work/state" \
            target/release/examples/counter > "$work/log" 2>&1 &
        echo $! > "$work/pid"
        for _ in $(seq 100); do curl -s "http://127.0.0.1:$http/" >/dev/null && break; sleep 0.05; done
        if [ "$mode" = plain ]; then target=$http; ca=-; else target=$https; ca="$work/cert.pem"; fi
        out=$(cd tests/clients && python3 https_load.py "$http" "$target" "$ca" "$restarts")
        serving=$(curl -s -i "http://127.0.0.1:$http/" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-pid"{print $2}')
        kill -TERM "$serving"
        for _ in $(seq 100); do kill -0 "$serving" 2>/dev/null || break; sleep 0.05; done
        gap=$(grep -o 'accept_gap_ms=[0-9.]*' "$work/log" | cut -d= -f2 | sort -n |
            awk '{a[NR]=$1} END{printf "%s / %s", a[int((NR+1)/2)], a[NR]}')
        read -r _ acked _ reconnects _ failed <<< "$out"
        echo "| $round | $mode | $acked | $reconnects | $failed | $gap |"
    done
done
