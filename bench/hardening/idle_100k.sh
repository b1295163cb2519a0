#!/usr/bin/env bash
# Many idle keep-alive connections on one worker: corral vs nginx, same run.
#   bench/hardening/idle_100k.sh
# Env: N=100000 (idle connections), HOLD=30 (seconds), WORKER_CONNECTIONS=110000,
#      RLIMIT=220000 (worker_rlimit_nofile), PROBE_PAUSE_MS=10,
#      SERVERS="corral nginx", CORRAL=path, EVENT_MODE=edge|level.
#
# One worker, keepalive_timeout 120s. idle_client.py opens N connections (one
# GET each, response read, then idle; source addresses 127.0.0.2.. so the
# ephemeral port range is no limit) and holds them HOLD seconds, while
# `hlib.py probe` does sequential GETs, each on a fresh connection, PROBE_PAUSE_MS
# apart. Prints per server: the probe's p50/p99/max, the worker's RSS before
# the connections, once they are idle and after the hold, its CPU seconds
# (utime+stime) during the hold, its descriptor count, and how many idle
# connections the server closed during the hold (should be 0).
#
# The open-file limit: the script raises its own (hard and soft) to RLIMIT if
# it may; without CAP_SYS_RESOURCE it cannot go above the current hard limit,
# and then worker_rlimit_nofile is lowered to that limit and N to what fits,
# with a warning (the summary line shows the N actually used).
set -euo pipefail
N=${N:-100000}
HOLD=${HOLD:-30}
WORKER_CONNECTIONS=${WORKER_CONNECTIONS:-110000}
RLIMIT=${RLIMIT:-220000}
PROBE_PAUSE_MS=${PROBE_PAUSE_MS:-10}
. "$(cd "$(dirname "$0")" && pwd)/common.sh"

if ! { ulimit -Hn "$RLIMIT" && ulimit -n "$RLIMIT"; } 2>/dev/null; then
  hard=$(ulimit -Hn)
  ulimit -n "$hard"
  echo "WARNING: cannot raise the open-file limit to $RLIMIT (hard limit $hard, no CAP_SYS_RESOURCE?):" \
    "worker_rlimit_nofile lowered to $hard" >&2
  RLIMIT=$hard
fi
if ((N + 200 > RLIMIT)); then
  echo "WARNING: N=$N does not fit in $RLIMIT descriptors: N lowered to $((RLIMIT - 200))" >&2
  N=$((RLIMIT - 200))
fi
if ((N > 250 * 20000)); then
  echo "N=$N needs more than 250 source addresses" >&2
  exit 1
fi

# wait_line FILE PATTERN SECONDS PID: waits for a line matching PATTERN.
wait_line() {
  local f=$1 pat=$2 limit=$3 pid=$4 deadline=$((SECONDS + $3))
  while ((SECONDS < deadline)); do
    grep -q "$pat" "$f" 2>/dev/null && return 0
    alive "$pid" || { grep -q "$pat" "$f" 2>/dev/null && return 0; return 1; }
    sleep 0.2
  done
  return 1
}

declare -A SUMMARY
for s in $SERVERS; do
  port=$(free_port)
  start_one "$s" "$port" 'keepalive_timeout = "120s"' 'keepalive_timeout 120s;' 30
  wpid=$WPID
  rss0=$(rss_kib "$wpid")
  fds0=$(fd_count "$wpid")
  echo "== $s: worker $wpid, worker_connections $WORKER_CONNECTIONS, rlimit $RLIMIT: opening $N idle connections"
  out="$W/$s-idle.out"
  open_limit=$((N / 500 + 60))
  timeout -k 5 $((open_limit + HOLD + 60)) python3 "$HH/idle_client.py" --port "$port" --n "$N" --hold "$HOLD" >"$out" 2>&1 &
  cpid=$!
  STARTED+=("$cpid")
  if ! wait_line "$out" '^READY' "$open_limit" "$cpid"; then
    echo "  idle client not ready after ${open_limit}s:"; sed 's/^/    /' "$out"
    SUMMARY[$s]="FAILED: connections not opened"
    stop_pid "$cpid"; stop_server "$MASTER"; continue
  fi
  ready=$(grep '^READY' "$out")
  rss1=$(rss_kib "$wpid")
  cpu0=$(cpu_ticks "$wpid")
  t0=$(date +%s.%N)
  echo "  $ready"
  fg_run timeout -k 5 $((HOLD + 15)) python3 "$HH/hlib.py" probe "$port" "$((HOLD > 2 ? HOLD - 1 : 1))" \
    --pause-ms "$PROBE_PAUSE_MS" >"$W/$s-probe.out" 2>&1 || true
  probe=$(cat "$W/$s-probe.out")
  cpu1=$(cpu_ticks "$wpid")
  t1=$(date +%s.%N)
  rss2=$(rss_kib "$wpid")
  fds1=$(fd_count "$wpid")
  echo "$probe" | sed 's/^/  /'
  wait_line "$out" '^DONE' 30 "$cpid" || true
  wait "$cpid" 2>/dev/null || true
  done_line=$(grep '^DONE' "$out" || echo "DONE (no report)")
  echo "  $done_line"
  opened=$(sed -n 's/^READY opened=\([0-9]*\).*/\1/p' "$out")
  cpu=$(ticks_to_s $((cpu1 - cpu0)))
  wall=$(python3 -c "print('%.1f' % ($t1 - $t0))")
  perconn=$(python3 -c "print('%.0f' % ((${rss1} - ${rss0}) * 1024 / max(1, ${opened:-0})))")
  echo "  worker RSS: ${rss0} KiB before, ${rss1} KiB with the idle connections, ${rss2} KiB after the hold" \
    "(${perconn} B per connection); descriptors ${fds0} -> ${fds1}; CPU ${cpu}s in ${wall}s of hold"
  echo "  error log ($s):"
  log_summary "$W/$s-error.log"
  pline=$(echo "$probe" | grep '^probe:' | sed 's/^probe: //' || echo "no probe result")
  SUMMARY[$s]="idle=${opened:-0}/$N ${done_line#DONE } | probe $pline | RSS ${rss0}->${rss1}->${rss2} KiB | cpu_hold=${cpu}s"
  stop_server "$MASTER"
done

echo
echo "== summary (idle_100k: N=$N held ${HOLD}s, one worker, worker_connections $WORKER_CONNECTIONS, rlimit $RLIMIT)"
for s in $SERVERS; do
  printf '%-7s %s\n' "$s" "${SUMMARY[$s]}"
done
