#!/usr/bin/env bash
# Workers killed under load: corral vs nginx, same run, same load.
#   bench/hardening/kill_workers.sh
# Env: DURATION=30 (seconds of kills), INTERVAL=2, CONNS=50, TAIL=3,
#      SERVERS="corral nginx", CORRAL=path, EVENT_MODE=edge|level,
#      QUIET_EXPECTED=1 (do not list the expected failures one by one).
#
# Two workers (worker_connections 1024 each), a 1 KiB static file, CONNS
# keep-alive connections doing GETs back to back (kill_workers_client.py).
# Every INTERVAL seconds a random worker is stopped, the connections it holds
# are read from /proc, and it gets SIGKILL. A failed request is expected only
# on a connection that the killed worker held; any other failure is a real
# one. Prints each kill (victim, its age, its connections, respawn time), each
# failure, and one summary line per server.
set -euo pipefail
DURATION=${DURATION:-30}
INTERVAL=${INTERVAL:-2}
CONNS=${CONNS:-50}
TAIL=${TAIL:-3}
. "$(cd "$(dirname "$0")" && pwd)/common.sh"

declare -A SUMMARY
for s in $SERVERS; do
  port=$(free_port)
  case $s in
    corral) corral_conf corral "$port" 2 1024 ;;
    nginx) nginx_conf nginx "$port" 2 1024 ;;
  esac
  start_server "$s" "$s"
  wait_ready "$port" "$MASTER" 2
  echo "== $s: 2 workers ($(children "$MASTER" | tr '\n' ' ')), $CONNS connections, a kill every ${INTERVAL}s for ${DURATION}s"
  out="$W/$s-client.out"
  fg_run timeout -k 5 $((DURATION + TAIL + 30)) python3 "$HH/kill_workers_client.py" \
    --port "$port" --master "$MASTER" --conns "$CONNS" --duration "$DURATION" \
    --interval "$INTERVAL" --tail "$TAIL" ${QUIET_EXPECTED:+--quiet-expected} >"$out" 2>&1 ||
    echo "client exited with status $?"
  cat "$out"
  remember_workers "$MASTER"
  echo "  workers now: $(children "$MASTER" | tr '\n' ' ')"
  echo "  error log ($s):"
  echo "    worker deaths logged: $(grep -ciE 'exited on signal 9|signal 9' "$W/$s-error.log" || true)"
  log_summary "$W/$s-error.log"
  stop_server "$MASTER"
  SUMMARY[$s]=$(grep '^RESULT' "$out" | sed 's/^RESULT //' || echo "no result")
done

echo
echo "== summary (kill_workers: ${DURATION}s, a SIGKILL every ${INTERVAL}s, $CONNS keep-alive connections)"
for s in $SERVERS; do
  printf '%-7s %s\n' "$s" "${SUMMARY[$s]}"
done
