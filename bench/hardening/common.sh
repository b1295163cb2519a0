# Shared by bench/hardening/*.sh: source it right after `set -euo pipefail`.
#
# Gives: $HH (this directory), $REPO, $CORRAL, $NGINX, $W (a fresh temporary
# directory under /tmp, removed at exit), $SERVERS, and helpers to start corral
# and nginx on loopback, find their workers, read /proc figures and stop
# everything this script started, by pid, on exit.

HH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HH/../.." && pwd)
. "$REPO/bench/lib.sh" # need, bin_of, free_port, nginx_temp_paths

CORRAL=${CORRAL:-$REPO/target/release/corral}
SERVERS=${SERVERS:-corral nginx}
EVENT_MODE=${EVENT_MODE:-edge} # corral's event_mode
TICK=$(getconf CLK_TCK)

case " $SERVERS " in *" nginx "*) need nginx:nginx ;; esac
NGINX=$(bin_of nginx)
if [[ " $SERVERS " == *" corral "* && ! -x "$CORRAL" ]]; then
  echo "no corral binary at $CORRAL (set CORRAL=...)" >&2
  exit 1
fi

W=$(mktemp -d /tmp/corral-hardening.XXXXXX)
chmod 755 "$W" # nginx workers run as nobody
mkdir -p "$W/www" "$W/nginx-tmp"
chmod 755 "$W/www"
head -c 1024 /dev/urandom >"$W/www/1k.bin"
chmod 644 "$W/www/1k.bin"

# Every process this script started (servers, clients), and the workers seen.
STARTED=()
SEEN_WORKERS=()

# stat_fields PID: /proc/PID/stat after "(comm) ": state ppid ... (utime is
# the 12th, stime the 13th).
stat_fields() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null; }

alive() { # pid: running and not a zombie
  local st
  st=$(stat_fields "$1" | awk '{print $1}')
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
ppid_of() { stat_fields "$1" | awk '{print $2}'; }

stop_pid() { # pid [seconds]: SIGTERM, then SIGKILL after the grace period
  local p=$1 grace=${2:-5} i
  alive "$p" || return 0
  # Only our own children: a pid that ended may have been reused meanwhile.
  [ "$(ppid_of "$p")" = "$$" ] || return 0
  kill -TERM "$p" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    alive "$p" || return 0
    sleep 0.1
  done
  kill -KILL "$p" 2>/dev/null || true
}

# Stops what was started, newest first, then any worker that outlived its
# master (only pids still running a corral or nginx binary).
cleanup_all() {
  local i p
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    p=${STARTED[i]}
    case " ${SERVER_MASTERS:-} " in *" $p "*) remember_workers "$p" ;; esac
    stop_pid "$p" 5
  done
  for p in "${SEEN_WORKERS[@]}"; do kill_stray_worker "$p"; done
  if [ -n "${KEEP_TMP:-}" ]; then
    echo "(temporary directory kept: $W)" >&2
  else
    rm -rf "$W"
  fi
}
trap cleanup_all EXIT
trap 'exit 130' INT TERM

# fg_run CMD...: runs CMD in the background and waits for it, so a signal to
# this script is handled at once (and the cleanup stops CMD by its pid).
fg_run() {
  "$@" &
  local p=$!
  STARTED+=("$p")
  wait "$p"
}

# kill_stray_worker PID: SIGKILL to a worker of ours that outlived its master
# (still a corral or nginx, and orphaned or still the child of one of our masters).
kill_stray_worker() {
  local p=$1 pp
  alive "$p" || return 0
  grep -qaE 'corral|nginx' "/proc/$p/cmdline" 2>/dev/null || return 0
  pp=$(ppid_of "$p")
  case " 1 ${SERVER_MASTERS:-} " in *" $pp "*) kill -KILL "$p" 2>/dev/null || true ;; esac
}

children() { # pid: its child pids, one a line
  cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+$' || true
}
remember_workers() {
  local c
  for c in $(children "$1"); do SEEN_WORKERS+=("$c"); done
}
first_worker() { children "$1" | head -1; }

rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
cpu_ticks() { stat_fields "$1" | awk '{print $12+$13}'; } # utime+stime
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
ticks_to_s() { python3 -c "print('%.2f' % ($1/$TICK))"; }

# wait_ready PORT MASTER_PID WORKERS [seconds=10]: the port answers a GET
# with 200 and the master has WORKERS children.
wait_ready() {
  local port=$1 master=$2 nw=$3 limit=${4:-10} deadline
  deadline=$((SECONDS + limit))
  while ((SECONDS < deadline)); do
    if ! alive "$master"; then
      echo "server $master died at start" >&2
      return 1
    fi
    if [ "$(children "$master" | wc -l)" -ge "$nw" ] &&
      python3 "$HH/hlib.py" get "$port" /1k.bin >/dev/null 2>&1; then
      remember_workers "$master"
      return 0
    fi
    sleep 0.1
  done
  echo "server $master not ready on port $port after ${limit}s" >&2
  return 1
}

# corral_conf NAME PORT WORKERS CONNECTIONS [RLIMIT] [extra [http] lines]
corral_conf() {
  local name=$1 port=$2 workers=$3 conns=$4 rlimit=${5:-} extra=${6:-}
  {
    echo "[main]"
    echo "workers = $workers"
    echo "worker_connections = $conns"
    [ -n "$rlimit" ] && echo "worker_rlimit_nofile = $rlimit"
    echo "event_mode = \"$EVENT_MODE\""
    echo "listen_backlog = 4096"
    echo "pid = \"$W/$name.pid\""
    echo "error_log = \"$W/$name-error.log\""
    echo "log_level = \"info\""
    echo "[http]"
    [ -n "$extra" ] && printf '%s\n' "$extra"
    echo "[[server]]"
    echo "listen = \"127.0.0.1:$port\""
    echo "root = \"$W/www\""
    echo "access_log = \"off\""
  } >"$W/$name.toml"
}

# nginx_conf NAME PORT WORKERS CONNECTIONS [RLIMIT] [extra http directives]
nginx_conf() {
  local name=$1 port=$2 workers=$3 conns=$4 rlimit=${5:-} extra=${6:-}
  {
    echo "worker_processes $workers;"
    [ -n "$rlimit" ] && echo "worker_rlimit_nofile $rlimit;"
    echo "daemon off;"
    echo "master_process on;"
    echo "pid $W/$name.pid;"
    echo "error_log $W/$name-error.log info;"
    echo "events { worker_connections $conns; }"
    echo "http {"
    echo "  access_log off;"
    echo "  sendfile on;"
    echo "  open_file_cache max=1000 inactive=60s;"
    echo "  $(nginx_temp_paths "$W/nginx-tmp")"
    [ -n "$extra" ] && echo "  $extra"
    echo "  server { listen 127.0.0.1:$port backlog=4096; root $W/www; }"
    echo "}"
  } >"$W/$name.conf"
}

SERVER_MASTERS=""
# start_server corral|nginx NAME: starts it (config written before), sets MASTER.
start_server() {
  local kind=$1 name=$2
  case $kind in
    corral) "$CORRAL" -c "$W/$name.toml" >>"$W/$name-stderr.log" 2>&1 & ;;
    nginx) "$NGINX" -c "$W/$name.conf" -p "$W" -e "$W/$name-error.log" >>"$W/$name-stderr.log" 2>&1 & ;;
  esac
  MASTER=$!
  STARTED+=("$MASTER")
  SERVER_MASTERS+=" $MASTER"
}

# start_one corral|nginx PORT [CORRAL_EXTRA] [NGINX_EXTRA] [READY_SECONDS]: one
# worker with WORKER_CONNECTIONS and RLIMIT, started and ready; sets MASTER, WPID.
start_one() {
  local s=$1 port=$2
  case $s in
    corral) corral_conf corral "$port" 1 "$WORKER_CONNECTIONS" "$RLIMIT" ${3:+"$3"} ;;
    nginx) nginx_conf nginx "$port" 1 "$WORKER_CONNECTIONS" "$RLIMIT" ${4:+"$4"} ;;
  esac
  start_server "$s" "$s"
  wait_ready "$port" "$MASTER" 1 ${5:+"$5"}
  WPID=$(first_worker "$MASTER")
}

# stop_server MASTER: stops it and any worker left.
stop_server() {
  remember_workers "$1"
  local kids
  kids=$(children "$1")
  stop_pid "$1" 8
  for p in $kids; do kill_stray_worker "$p"; done
}

# log_summary FILE [from_line]: counts by level, then the distinct messages
# of level warn and above (numbers masked), most frequent first.
log_summary() {
  local f=$1 from=${2:-1}
  [ -f "$f" ] || { echo "    (no log)"; return; }
  tail -n +"$from" "$f" | python3 -c '
import re, sys, collections
lv = collections.Counter(); msgs = collections.Counter(); first = {}
for line in sys.stdin:
    m = re.search(r"\[(\w+)\] \d+#\d+: (?:\*\d+ )?(.*)", line)
    if not m:
        continue
    lv[m.group(1)] += 1
    if m.group(1) in ("warn", "error", "crit", "alert", "emerg"):
        key = m.group(1) + ": " + re.sub(r"\d+", "N", m.group(2))[:160]
        msgs[key] += 1
        first.setdefault(key, m.group(2)[:200])
print("    log lines by level: " + (", ".join("%s=%d" % kv for kv in sorted(lv.items())) or "none"))
for k, n in msgs.most_common(8):
    print("    %6d x %s" % (n, first[k]))
'
}
