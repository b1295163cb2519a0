#!/usr/bin/env bash
# The concurrency models side by side: corral's accept modes (exclusive,
# reuseport, dispatch) x {1, 2} workers x {1, 2} threads per worker, the C
# floor (bench/floor.c), nginx and lighttpd, all in one run with the same
# load: a 1 KiB file over keep-alive and with Connection: close.
#   bench/models.sh [seconds=5] [rounds=1]
#   ONLY=latency bench/models.sh     just the dispatch hop latency (below)
#   ONLY=floor bench/models.sh 5 6   the default mode, the C floor, nginx and
#                                    lighttpd in alternating rounds (PIN=1:
#                                    servers on CPU 0, wrk on CPU 1; THREADS=
#                                    wrk's threads, 2 by default)
# Prints req/s, p99 and CPU µs per request (every process of the server:
# master, workers, threads), writes bench/models.tsv and the chart
# bench/models.svg (bench/svgchart.py). Needs wrk, gcc, nginx, lighttpd.
set -euo pipefail
SECS=${1:-5}
ROUNDS=${2:-1}
CONNS=${CONNS:-50}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")

. "$HERE/lib.sh"
need wrk:wrk nginx:nginx-light lighttpd:lighttpd gcc:gcc
NGINX=$(bin_of nginx)
LIGHTTPD=$(bin_of lighttpd)
build_corral

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
W=$(mktemp -d /tmp/corral-models.XXXXXX)
PID=
cleanup() {
  [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null || true
  for j in $(jobs -p); do kill -TERM "$j" 2>/dev/null || true; done
  sleep 0.3
  rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/www"
chmod 755 "$W" "$W/www"
head -c 1024 /dev/urandom >"$W/www/1k.bin"
chmod 644 "$W/www/1k.bin"
gcc -O2 -o "$W/floor" "$HERE/floor.c"
TICK=$(getconf CLK_TCK)

# CPU ticks of a process and all its descendants (threads included).
tree_ticks() {
  local pids=$1 all=$1 kids
  while [ -n "$pids" ]; do
    kids=$(for p in $pids; do ps -o pid= --ppid "$p" 2>/dev/null; done | tr -s ' \n' ' ')
    pids=$(echo $kids)
    all="$all $pids"
  done
  local t=0
  for p in $all; do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}

wait_port() {
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$1/1k.bin" && return 0
    sleep 0.05
  done
  echo "server on port $1 did not start" >&2
  return 1
}

# wrk's threads, and what it runs under (PIN=1 of ONLY=floor: taskset).
THREADS=${THREADS:-2}
PIN_WRK=()

# One measurement: load (keep-alive | close) on port, of the server whose
# pid is the third argument ($PID if none). Prints req/s, p99 ms, CPU µs/req.
measure() {
  local load=$1 port=$2 pid=${3:-$PID} hdr=() out t0 t1 reqs rps p99 us
  [ "$load" = close ] && hdr=(-H "Connection: close")
  t0=$(tree_ticks "$pid")
  out=$("${PIN_WRK[@]}" wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency "${hdr[@]}" "http://127.0.0.1:$port/1k.bin")
  t1=$(tree_ticks "$pid")
  if echo "$out" | grep -qE 'Non-2xx|Socket errors'; then
    echo "WARNING: $NAME $load: $(echo "$out" | grep -E 'Non-2xx|Socket errors' | tr -s ' ')" >&2
  fi
  reqs=$(echo "$out" | awk '/requests in/{print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/{printf "%d", $2}')
  p99=$(to_ms "$(echo "$out" | awk '$1=="99%"{print $2}')")
  us=$(python3 -c "print(round(($t1-$t0)/$TICK*1e6/max($reqs,1),2))")
  echo "$rps $p99 $us"
}

# A corral config: corral_conf PORT MODE WORKERS THREADS
corral_conf() {
  cat >"$W/corral.toml" <<CONF
[main]
workers = $3
worker_threads = $4
accept = "$2"
worker_connections = 4096
pid = "$W/corral.pid"
error_log = "$W/corral-error.log"
log_level = "warn"
[[server]]
listen = "127.0.0.1:$1"
root = "$W/www"
access_log = "off"
CONF
}

# An nginx config: nginx_conf PORT WORKERS
nginx_conf() {
  cat >"$W/nginx.conf" <<CONF
worker_processes $2;
worker_rlimit_nofile 20000;
daemon off;
pid $W/nginx.pid;
error_log $W/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  open_file_cache max=1000 inactive=60s;
  keepalive_requests 1000000;
  $(nginx_temp_paths "$W/nginx-tmp")
  server { listen 127.0.0.1:$1; root $W/www; }
}
CONF
}

# A lighttpd config (one process): lighttpd_conf PORT
lighttpd_conf() {
  cat >"$W/lighttpd.conf" <<CONF
server.document-root = "$W/www"
server.port = $1
server.bind = "127.0.0.1"
server.pid-file = "$W/lighttpd.pid"
server.errorlog = "$W/lighttpd-error.log"
server.max-keep-alive-requests = 1000000
server.max-fds = 20000
server.max-connections = 4096
CONF
}

# The extra latency of dispatch's hop through the master: one client, a new
# connection per request (connect, request, answer, close), so every
# request waits for the master to see the connection and tell a worker.
# Two workers: with one, dispatch has nothing to choose and does not hop.
hop_latency() {
  echo
  echo "== dispatch hop: wrk -t1 -c1 -H 'Connection: close', 2 workers, ${SECS}s =="
  printf '%-12s %10s %10s %10s %10s\n' mode req/s avg_ms p50_ms p99_ms
  for mode in exclusive dispatch; do
    local port out
    port=$(free_port)
    corral_conf "$port" "$mode" 2 1
    "$CORRAL" -c "$W/corral.toml" & PID=$!
    wait_port "$port"
    out=$(wrk -t1 -c1 -d"${SECS}s" --latency -H "Connection: close" "http://127.0.0.1:$port/1k.bin")
    printf '%-12s %10s %10s %10s %10s\n' "$mode" "$(echo "$out" | awk '/Requests\/sec/{printf "%d", $2}')" \
      "$(to_ms "$(echo "$out" | awk '$1=="Latency" && $2!="Distribution"{print $2; exit}')")" \
      "$(to_ms "$(echo "$out" | awk '$1=="50%"{print $2}')")" "$(to_ms "$(echo "$out" | awk '$1=="99%"{print $2}')")"
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=
    sleep 0.5
  done
}

if [ "${ONLY:-}" = latency ]; then
  hop_latency
  exit 0
fi

# The default mode against the C floor, nginx and lighttpd (one process
# each), all started at once and measured in alternating rounds so that a
# slow moment of the machine hits every server alike. PIN=1 puts the servers
# on CPU 0 and wrk on CPU 1: each server's CPU per request is then its own
# work, not the scheduler's price of sharing both cores with wrk's threads.
floor_rounds() {
  local pin_srv=() pids=() names=() ports=() i
  if [ "${PIN:-0}" = 1 ]; then pin_srv=(taskset -c 0); PIN_WRK=(taskset -c 1); fi
  start() { # name port command...
    names+=("$1"); ports+=("$2"); shift 2
    "${pin_srv[@]}" "$@" & pids+=($!)
  }
  local pc pf pn pl
  pc=$(free_port); pf=$(free_port); pn=$(free_port); pl=$(free_port)
  corral_conf "$pc" exclusive 1 1
  start "corral (default)" "$pc" "$CORRAL" -c "$W/corral.toml"
  start "C floor" "$pf" "$W/floor" "$pf" 1
  nginx_conf "$pn" 1
  start "nginx" "$pn" "$NGINX" -c "$W/nginx.conf" -p "$W"
  lighttpd_conf "$pl"
  start "lighttpd" "$pl" "$LIGHTTPD" -D -f "$W/lighttpd.conf"
  for i in "${!ports[@]}"; do wait_port "${ports[$i]}"; done
  sleep 0.3
  echo "== default mode vs the C floor: PIN=${PIN:-0}, wrk -t$THREADS -c$CONNS, $ROUNDS alternating round(s) of ${SECS}s =="
  printf '%-18s %-10s %10s %8s %10s\n' server load req/s p99_ms cpu_us/req
  local load r r_s p99 us
  declare -A cpu=() rps=()
  for load in keep-alive close; do
    for r in $(seq "$ROUNDS"); do
      for i in "${!ports[@]}"; do
        NAME=${names[$i]}
        read -r r_s p99 us < <(measure "$load" "${ports[$i]}" "${pids[$i]}")
        printf '%-18s %-10s %10s %8s %10s\n' "$NAME" "$load" "$r_s" "$p99" "$us"
        cpu[$load,$i]="${cpu[$load,$i]:-} $us"
        rps[$load,$i]="${rps[$load,$i]:-} $r_s"
      done
    done
  done
  echo "== means; CPU per request against the C floor's =="
  for load in keep-alive close; do
    for i in "${!ports[@]}"; do
      python3 - "${names[$i]}" "$load" "${rps[$load,$i]}" "${cpu[$load,$i]}" "${cpu[$load,1]}" <<'PY'
import sys
name, load, rps, cpu, floor = sys.argv[1:]
mean = lambda v: sum(map(float, v.split())) / len(v.split())
print(f"{name:<18} {load:<10} {mean(rps):10.0f} req/s {mean(cpu):6.2f} us/req  x{mean(cpu)/mean(floor):.2f} of the floor")
PY
    done
  done
  for i in "${!pids[@]}"; do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

if [ "${ONLY:-}" = floor ]; then
  floor_rounds
  exit 0
fi

# The whole matrix (only this run writes the table and the chart).
TSV="$HERE/models.tsv"
printf '# bench/models.sh %s s x %s round(s), wrk -t%s -c%s, %s\n' "$SECS" "$ROUNDS" "$THREADS" "$CONNS" "$(date -u +%F)" >"$TSV"
printf 'load\tname\treq_s\tp99_ms\tcpu_us\n' >>"$TSV"
printf '%-24s %-10s %10s %8s %10s\n' server load req/s p99_ms cpu_us/req

# Runs both loads against the server started by "$@" (pid in PID).
bench() {
  local port=$1; shift
  "$@" & PID=$!
  wait_port "$port"
  sleep 0.3
  for load in keep-alive close; do
    local sr=0 sc=0 worst=0 rps p99 us
    for _ in $(seq "$ROUNDS"); do
      read -r rps p99 us < <(measure "$load" "$port")
      sr=$((sr + rps)); sc=$(python3 -c "print($sc+$us)"); worst=$(python3 -c "print(max($worst,$p99))")
    done
    rps=$((sr / ROUNDS)); us=$(python3 -c "print(round($sc/$ROUNDS,2))")
    printf '%-24s %-10s %10s %8s %10s\n' "$NAME" "$load" "$rps" "$worst" "$us"
    printf '%s\t%s\t%s\t%s\t%s\n' "$load" "$NAME" "$rps" "$worst" "$us" >>"$TSV"
  done
  kill -TERM "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=
  sleep 0.5
}

for mode in exclusive reuseport dispatch; do
  for workers in 1 2; do
    for threads in 1 2; do
      port=$(free_port)
      corral_conf "$port" "$mode" "$workers" "$threads"
      NAME="$mode w$workers t$threads"
      bench "$port" "$CORRAL" -c "$W/corral.toml"
    done
  done
done

for procs in 1 2; do
  port=$(free_port)
  NAME="C floor w$procs"
  bench "$port" "$W/floor" "$port" "$procs"
done

for workers in 1 2; do
  port=$(free_port)
  nginx_conf "$port" "$workers"
  NAME="nginx w$workers"
  bench "$port" "$NGINX" -c "$W/nginx.conf" -p "$W"
done

port=$(free_port)
lighttpd_conf "$port"
NAME="lighttpd w1"
bench "$port" "$LIGHTTPD" -D -f "$W/lighttpd.conf"

hop_latency

python3 "$HERE/svgchart.py" "$TSV" "$HERE/models.svg" "Concurrency models: 1 KiB, wrk -t$THREADS -c$CONNS, 2 cores"
echo "wrote $TSV and $HERE/models.svg"
