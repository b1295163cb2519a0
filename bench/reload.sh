#!/usr/bin/env bash
# Requests lost during reloads and binary upgrades: corral vs nginx, same run.
#   bench/reload.sh [seconds=30]
# For each server, two runs of `wrk -t2 -c20` for SECONDS against a 1 KiB file:
#   1. a reload (SIGHUP) every second;
#   2. the same, with a binary upgrade midway (USR2, then WINCH and QUIT to
#      the old master), reloads going on to whichever master owns the pid file.
# Prints requests served and failures (wrk's connect/read/write/timeout
# errors plus non-2xx responses). The target for corral is 0 failures.
set -euo pipefail
SECS=${1:-30}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
. "$HERE/lib.sh"
need wrk:wrk nginx:nginx-light
NGINX=$(bin_of nginx)
build_corral

W=$(mktemp -d /tmp/corral-reload.XXXXXX)
chmod 755 "$W"
MASTERS=()
cleanup() {
  for f in "$W"/*.pid "$W"/*.pid.oldbin; do
    [ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null || true
  done
  for p in "${MASTERS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 1
  rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/www" "$W/nginx-tmp"
chmod 755 "$W/www"
head -c 1024 /dev/urandom >"$W/www/1k.bin"
chmod 644 "$W/www/1k.bin"
P_CORRAL=$(free_port); P_NGINX=$(free_port)

cat >"$W/corral.toml" <<CONF
[main]
workers = 2
pid = "$W/corral.pid"
error_log = "$W/corral-error.log"
log_level = "notice"
[[server]]
listen = "127.0.0.1:$P_CORRAL"
root = "$W/www"
CONF
cat >"$W/nginx.conf" <<CONF
worker_processes 2;
daemon on;   # nginx accepts USR2 only when its parent is init
pid $W/nginx.pid;
error_log $W/nginx-error.log notice;
events { worker_connections 1024; }
http {
  access_log off;
  $(nginx_temp_paths "$W/nginx-tmp")
  server { listen 127.0.0.1:$P_NGINX; root $W/www; }
}
CONF

"$CORRAL" -c "$W/corral.toml" 2>/dev/null & MASTERS+=($!)
"$NGINX" -c "$W/nginx.conf" -p "$W" 2>/dev/null
sleep 1

# run NAME PORT PIDFILE UPGRADE(0|1): prints "requests failures"
run() {
  local name=$1 port=$2 pidf=$3 upgrade=$4 out
  wrk -t2 -c20 -d"${SECS}s" "http://127.0.0.1:$port/1k.bin" >"$W/wrk.out" 2>&1 &
  local wrk_pid=$!
  local mid=$((SECS / 2))
  for i in $(seq 1 $((SECS - 2))); do
    sleep 1
    if [ "$upgrade" = 1 ] && [ "$i" = "$mid" ]; then
      local old; old=$(cat "$pidf")
      kill -USR2 "$old"; sleep 1
      kill -WINCH "$old"; sleep 1
      kill -QUIT "$old"
      echo "  $name: binary upgrade at ${i}s: old master $old -> new master $(cat "$pidf")" >&2
    else
      kill -HUP "$(cat "$pidf")"
    fi
  done
  wait "$wrk_pid"
  out=$(cat "$W/wrk.out")
  local reqs errs non2xx
  reqs=$(echo "$out" | awk '/requests in/{print $1}')
  errs=$(echo "$out" | awk '/Socket errors/{gsub(",","");print $4+$6+$8+$10}')
  non2xx=$(echo "$out" | awk '/Non-2xx/{print $5}')
  echo "${reqs:-0} $(( ${errs:-0} + ${non2xx:-0} ))"
  echo "$out" | grep -E "Socket errors|Non-2xx" | sed "s/^/  $name: /" >&2 || true
}

printf '%-8s %-28s %10s %9s\n' server scenario requests failed
for name in corral nginx; do
  if [ $name = corral ]; then port=$P_CORRAL; pidf="$W/corral.pid"; else port=$P_NGINX; pidf="$W/nginx.pid"; fi
  read -r reqs failed < <(run $name $port "$pidf" 0)
  printf '%-8s %-28s %10s %9s\n' $name "reload every second" "$reqs" "$failed"
  sleep 2
  read -r reqs failed < <(run $name $port "$pidf" 1)
  printf '%-8s %-28s %10s %9s\n' $name "reloads + binary upgrade" "$reqs" "$failed"
  sleep 2
done
