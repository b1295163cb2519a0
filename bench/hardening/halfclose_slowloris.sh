#!/usr/bin/env bash
# Half-close storm + slowloris + a probe: corral vs nginx, same run, same load.
#   bench/hardening/halfclose_slowloris.sh
# Env: STORM_N=30000 connections over STORM_SECS=20 seconds, READ_TIMEOUT=1
#      (how long a storm client waits for the server to close after its FIN),
#      SLOW_N=1000 slowloris connections, SLOW_INTERVAL=5 (seconds per byte),
#      SAMPLE_AFTER=2 (seconds after the storm for the socket count),
#      LATE_SAMPLE= (seconds after the storm for a second count of the storm
#      connections still held, e.g. 65; off by default: it lengthens the run),
#      WORKER_CONNECTIONS=16384, SERVERS="corral nginx", CORRAL=path,
#      EVENT_MODE=edge|level.
#
# One worker, default timeouts (client_header_timeout 60s, keepalive 75s).
#  (a) storm (halfclose_clients.py storm): short connections from 127.0.0.2-9,
#      each sending a partial head, a whole GET, a POST with a short body, or a
#      POST with a truncated body, then shutdown(SHUT_WR); each waits at most
#      READ_TIMEOUT for the server to close, then closes. Per kind: how many
#      were answered and closed (right), held past the timeout, reset.
#  (b) slowloris (halfclose_clients.py slowloris): SLOW_N connections from
#      127.0.0.250 trickling one byte of a never-ending head every SLOW_INTERVAL.
#  (c) probe (hlib.py probe): sequential GETs from 127.0.0.1, each on a fresh
#      connection, 10 ms apart: p50/p99/max and failures.
# SAMPLE_AFTER seconds after the storm: the server port's sockets by state and
# by client (`ss -tan`), and the worker's descriptors. Storm connections the
# server still holds then (ESTAB + CLOSE-WAIT from 127.0.0.2-9) should be 0.
set -euo pipefail
STORM_N=${STORM_N:-30000}
STORM_SECS=${STORM_SECS:-20}
READ_TIMEOUT=${READ_TIMEOUT:-1}
SLOW_N=${SLOW_N:-1000}
SLOW_INTERVAL=${SLOW_INTERVAL:-5}
SAMPLE_AFTER=${SAMPLE_AFTER:-2}
WORKER_CONNECTIONS=${WORKER_CONNECTIONS:-16384}
. "$(cd "$(dirname "$0")" && pwd)/common.sh"
ulimit -n "$(ulimit -Hn)"
RLIMIT=$(($(ulimit -Hn) < WORKER_CONNECTIONS + 2000 ? $(ulimit -Hn) : WORKER_CONNECTIONS + 2000))

wait_line() { # FILE PATTERN SECONDS
  local deadline=$((SECONDS + $3))
  while ((SECONDS < deadline)); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# sockets PORT: the server side of each connection on PORT, counted by client
# group (storm 127.0.0.2-9, slowloris 127.0.0.250, other) and state.
sockets() {
  ss -Htan "( sport = :$1 )" | awk '
    $1 == "LISTEN" { next }
    { peer = $5; sub(/:[0-9]+$/, "", peer)
      g = (peer == "127.0.0.250") ? "slowloris" : (peer ~ /^127\.0\.0\.[2-9]$/) ? "storm" : "other"
      n[g " " $1]++ }
    END { for (k in n) print k, n[k] }' | sort
}

declare -A SUMMARY
for s in $SERVERS; do
  port=$(free_port)
  start_one "$s" "$port"
  wpid=$WPID
  fds0=$(fd_count "$wpid")
  echo "== $s: worker $wpid, worker_connections $WORKER_CONNECTIONS; $SLOW_N slowloris, a storm of $STORM_N over ${STORM_SECS}s"

  slow_out="$W/$s-slow.out"
  slow_secs=$((STORM_SECS + SAMPLE_AFTER + 4))
  timeout -k 5 $((slow_secs + 30)) python3 "$HH/halfclose_clients.py" slowloris "$port" --n "$SLOW_N" \
    --interval "$SLOW_INTERVAL" --secs "$slow_secs" >"$slow_out" 2>&1 &
  slow_pid=$!
  STARTED+=("$slow_pid")
  if ! wait_line "$slow_out" '^READY' 30; then
    echo "  slowloris not connected after 30 s"; cat "$slow_out"
  fi
  echo "  slowloris $(grep '^READY' "$slow_out" || true)"

  probe_out="$W/$s-probe.out"
  timeout -k 5 $((STORM_SECS + SAMPLE_AFTER + 30)) python3 "$HH/hlib.py" probe "$port" \
    "$((STORM_SECS + SAMPLE_AFTER))" >"$probe_out" 2>&1 &
  probe_pid=$!
  STARTED+=("$probe_pid")

  cpu0=$(cpu_ticks "$wpid")
  storm_out="$W/$s-storm.out"
  fg_run timeout -k 5 $((STORM_SECS + 60)) python3 "$HH/halfclose_clients.py" storm "$port" --n "$STORM_N" \
    --secs "$STORM_SECS" --read-timeout "$READ_TIMEOUT" >"$storm_out" 2>&1 || echo "  storm client exited with status $?"
  cpu1=$(cpu_ticks "$wpid")
  storm_end=$SECONDS
  sed 's/^/  /' "$storm_out"
  sleep "$SAMPLE_AFTER"
  socks=$(sockets "$port")
  fds1=$(fd_count "$wpid")
  echo "  ${SAMPLE_AFTER}s after the storm, server-side sockets on :$port (client group, state, count):"
  echo "$socks" | sed 's/^/    /'
  held_estab=$(echo "$socks" | awk '$1=="storm" && $2=="ESTAB" {print $3}')
  held_cw=$(echo "$socks" | awk '$1=="storm" && $2=="CLOSE-WAIT" {print $3}')
  held=$((${held_estab:-0} + ${held_cw:-0}))

  wait "$probe_pid" 2>/dev/null || true
  sed 's/^/  /' "$probe_out"
  wait "$slow_pid" 2>/dev/null || true
  slow=$(grep '^SLOWLORIS' "$slow_out" | sed 's/^SLOWLORIS //' || echo "no report")
  echo "  slowloris: $slow"
  slow_alive=$(echo "$slow" | sed -n 's/.*alive=\([0-9]*\).*/\1/p')
  echo "  worker descriptors: $fds0 at rest, $fds1 ${SAMPLE_AFTER}s after the storm" \
    "(slowloris ${slow_alive:-?} of them); worker CPU during the storm $(ticks_to_s $((cpu1 - cpu0)))s"
  late=""
  if [ -n "${LATE_SAMPLE:-}" ]; then
    sleep $((storm_end + LATE_SAMPLE > SECONDS ? storm_end + LATE_SAMPLE - SECONDS : 0))
    late=$(sockets "$port" | awk '$1=="storm" && ($2=="ESTAB" || $2=="CLOSE-WAIT") {n+=$3} END {print n+0}')
    echo "  ${LATE_SAMPLE}s after the storm: $late storm connections still held"
    late=" held_after_${LATE_SAMPLE}s=$late"
  fi
  echo "  error log ($s):"
  log_summary "$W/$s-error.log"
  storm_line=$(grep '^STORM' "$storm_out" | sed 's/^STORM //' || echo "no storm report")
  pline=$(grep '^probe:' "$probe_out" | sed 's/^probe: //' || echo "no probe report")
  SUMMARY[$s]="storm_held_after_${SAMPLE_AFTER}s=$held (ESTAB ${held_estab:-0}, CLOSE-WAIT ${held_cw:-0})$late | $storm_line | probe $pline | slowloris alive=${slow_alive:-?}/$SLOW_N"
  stop_server "$MASTER"
done

echo
echo "== summary (halfclose_slowloris: storm $STORM_N over ${STORM_SECS}s, $SLOW_N slowloris, one worker)"
for s in $SERVERS; do
  printf '%-7s %s\n' "$s" "${SUMMARY[$s]}"
done
