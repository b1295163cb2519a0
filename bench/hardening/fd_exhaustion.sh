#!/usr/bin/env bash
# Running out of descriptors: corral vs nginx, same run.
#   bench/hardening/fd_exhaustion.sh
# Env: CONNS=200, RLIMIT=64 (worker_rlimit_nofile), WORKER_CONNECTIONS=1000,
#      HOLD=6 (seconds the connections are held), SERVERS="corral nginx",
#      CORRAL=path, EVENT_MODE=edge|level.
#
# One worker with worker_rlimit_nofile=64 and worker_connections=1000.
# fd_client.py opens CONNS connections (more than the limit) and sends a GET
# on each, holds them HOLD seconds (second GET on the answered ones halfway),
# closes them all and times how long a fresh client takes to get a 200.
# Checks: the error log names the shortage (descriptors / "Too many open
# files"), recovery within 5 s, and the worker's /proc/PID/fd count the same
# before and after (no leak). During the shortage one connection asks for a
# file the worker has not opened yet: its status shows how that is answered. Also prints the worker's CPU during the hold
# (an accept loop spinning on EMFILE shows here) and how many log lines the
# shortage produced.
set -euo pipefail
CONNS=${CONNS:-200}
RLIMIT=${RLIMIT:-64}
WORKER_CONNECTIONS=${WORKER_CONNECTIONS:-1000}
HOLD=${HOLD:-6}
. "$(cd "$(dirname "$0")" && pwd)/common.sh"

declare -A SUMMARY
for s in $SERVERS; do
  port=$(free_port)
  start_one "$s" "$port"
  wpid=$WPID
  head -c 2048 /dev/urandom >"$W/www/uncached-$s.bin"
  chmod 644 "$W/www/uncached-$s.bin"
  for _ in 1 2 3; do python3 "$HH/hlib.py" get "$port" /1k.bin >/dev/null || true; done
  sleep 0.5
  fds0=$(fd_count "$wpid")
  log0=$(($(wc -l <"$W/$s-error.log") + 1))
  echo "== $s: worker $wpid, worker_rlimit_nofile $RLIMIT, worker_connections $WORKER_CONNECTIONS, $fds0 descriptors open at rest; $CONNS connections"
  out="$W/$s-fd.out"
  fg_run timeout -k 5 $((HOLD + 40)) python3 "$HH/fd_client.py" --port "$port" --wpid "$wpid" --n "$CONNS" \
    --hold "$HOLD" --uncached "/uncached-$s.bin" >"$out" 2>&1 || echo "  client exited with status $?"
  sed 's/^/  /' "$out"
  sleep 1
  fds1=$(fd_count "$wpid")
  for _ in $(seq 1 20); do # let lingering closes finish
    [ "$fds1" -le "$fds0" ] && break
    sleep 0.25
    fds1=$(fd_count "$wpid")
  done
  wpid_after=$(first_worker "$MASTER")
  [ "$wpid_after" = "$wpid" ] || echo "  WORKER CHANGED: $wpid -> $wpid_after (it died?)"
  new_log=$(tail -n +"$log0" "$W/$s-error.log")
  n_log=$(printf '%s' "$new_log" | grep -c . || true)
  n_fd=$(printf '%s' "$new_log" | grep -ciE 'descriptor|open files|EMFILE|ENFILE' || true)
  first_fd=$(printf '%s\n' "$new_log" | grep -iE 'descriptor|open files|EMFILE|ENFILE' | head -1 | sed -E 's/^[0-9\/: ]+//' || true)
  recovery=$(sed -n 's/^RECOVERY //p' "$out")
  rsecs=$(sed -n 's/^RECOVERY secs=\([0-9.]*\).*/\1/p' "$out")
  cpu=$(sed -n 's/^HELD .*worker_cpu_s=\([0-9.]*\).*/\1/p' "$out")
  served=$(sed -n 's/^SERVED //p' "$out" | awk '{print $2}')
  uncached=$(sed -n 's/^HELD .*uncached_file_status=\([^ ]*\).*/\1/p' "$out")
  verdict() { if eval "$1"; then echo PASS; else echo FAIL; fi; }
  v_log=$(verdict '[ "$n_fd" -gt 0 ]')
  v_rec=$(verdict '[ -n "$rsecs" ] && python3 -c "import sys; sys.exit(0 if $rsecs <= 5 else 1)"')
  v_fd=$(verdict '[ "$fds1" = "$fds0" ]')
  echo "  descriptors: $fds0 before, $fds1 after  [$v_fd no leak]"
  echo "  error log: $n_log new lines, $n_fd about descriptors  [$v_log names the shortage]"
  [ -n "$first_fd" ] && echo "    first: $first_fd"
  echo "  recovery: $recovery  [$v_rec 200 within 5 s]"
  echo "  error log ($s, whole run):"
  log_summary "$W/$s-error.log"
  SUMMARY[$s]="$served fd_before=$fds0 fd_after=$fds1 log_lines=$n_log fd_log_lines=$n_fd cpu_hold=${cpu}s uncached_file=$uncached recovery=${rsecs:-FAILED}s leak:$v_fd log:$v_log recovery:$v_rec"
  stop_server "$MASTER"
done

echo
echo "== summary (fd_exhaustion: $CONNS connections, worker_rlimit_nofile $RLIMIT, held ${HOLD}s)"
for s in $SERVERS; do
  printf '%-7s %s\n' "$s" "${SUMMARY[$s]}"
done
