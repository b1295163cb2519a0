#!/usr/bin/env bash
# PHP "hello" through FastCGI: corral -> php-fpm vs nginx -> php-fpm, the same
# php-fpm pool for both, in one run.
#   bench/fastcgi.sh [rounds=3] [seconds=10]
#   CONNS=16 CHILDREN=4 bench/fastcgi.sh
#   WORKERS=2 CHILDREN=8 CONNS=32 bench/fastcgi.sh   two workers per front;
#       each keeps and (corral) caps at KEEPALIVE=CHILDREN/WORKERS connections
#   PIN=1 bench/fastcgi.sh      fronts on CPU 0, php-fpm and wrk on CPU 1
# Each front runs WORKERS (1) worker(s), access log off. nginx is set up at its
# fair best: `upstream { keepalive N; }` and `fastcgi_keep_conn on`. corral
# keeps N connections too and, with `max_conns = N`, queues what exceeds
# the pool's children instead of piling it into php-fpm's listen queue.
# A php-fpm child serves one kept connection until it closes, so both fronts
# close idle ones after 1 s and each run starts 3 s after the last: the
# other front holds none of the children then.
# corral runs with `worker_sched_policy = "batch"` (docs/config.md). Four
# fronts per round, the same processes switched with chrt(1) between them:
#   corral        as configured (SCHED_BATCH workers)
#   corral-other  the same workers put back under SCHED_OTHER (the default)
#   nginx         as it runs (SCHED_OTHER)
#   nginx-batch   nginx's workers under SCHED_BATCH (what systemd's
#                 CPUSchedulingPolicy=batch would give it)
# Prints req/s, p99, the front's CPU µs per request (master and workers) and
# php-fpm's (all children), as means of interleaved rounds.
set -euo pipefail
ROUNDS=${1:-3}
SECS=${2:-10}
CONNS=${CONNS:-16}
CHILDREN=${CHILDREN:-4}
WORKERS=${WORKERS:-1}
# Kept connections per worker: together the workers hold no more than the pool's children.
KEEPALIVE=${KEEPALIVE:-$(( (CHILDREN + WORKERS - 1) / WORKERS ))}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
. "$HERE/lib.sh"
need wrk:wrk nginx:nginx-light php-fpm8.2:php-fpm
NGINX=$(bin_of nginx)
FPM=$(ls /usr/sbin/php-fpm* | sort | tail -1)
build_corral
# PIN=1: each front alone on CPU 0, php-fpm and wrk on CPU 1 (the same for both fronts).
if [ "${PIN:-0}" = 1 ]; then FRONT="taskset -c 0"; BACK="taskset -c 1"; else FRONT=""; BACK=""; fi

W=$(mktemp -d /tmp/corral-fastcgi.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  [ -f "$W/nginx.pid" ] && kill -TERM "$(cat "$W/nginx.pid")" 2>/dev/null || true
  sleep 0.5
  rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/www" "$W/nginx-tmp"
chmod -R 755 "$W"
printf '<?php echo "Hello, world\\n";\n' >"$W/www/hello.php"
P_CORRAL=$(free_port); P_NGINX=$(free_port)

cat >"$W/fpm.conf" <<CONF
[global]
pid = $W/fpm.pid
error_log = $W/fpm.log
daemonize = no
[bench]
listen = $W/fpm.sock
listen.mode = 0666
pm = static
pm.max_children = $CHILDREN
php_admin_value[opcache.enable] = 1
CONF
cat >"$W/corral.toml" <<CONF
[main]
workers = $WORKERS
worker_sched_policy = "batch"
pid = "$W/corral.pid"
error_log = "$W/corral-error.log"
log_level = "warn"
[upstream.php]
keepalive = $KEEPALIVE
keepalive_timeout = "1s"
max_conns = $KEEPALIVE
servers = ["unix:$W/fpm.sock"]
[[server]]
listen = "127.0.0.1:$P_CORRAL"
root = "$W/www"
access_log = "off"
[[server.location]]
match = "~ \\\\.php\$"
fastcgi = { pass = "php" }
CONF
cat >"$W/nginx.conf" <<CONF
worker_processes $WORKERS;
daemon on;
pid $W/nginx.pid;
error_log $W/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  $(nginx_temp_paths "$W/nginx-tmp")
  upstream php {
    server unix:$W/fpm.sock;
    keepalive $KEEPALIVE;
    keepalive_timeout 1s;
  }
  server {
    listen 127.0.0.1:$P_NGINX;
    root $W/www;
    location ~ \.php\$ {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
      fastcgi_keep_conn on;
      fastcgi_pass php;
    }
  }
}
CONF

$BACK "$FPM" -F -R -y "$W/fpm.conf" >/dev/null 2>&1 & PIDS+=($!)
FPM_PID=$!
sleep 1
$FRONT "$CORRAL" -c "$W/corral.toml" & PIDS+=($!)
CORRAL_PID=$!
$FRONT "$NGINX" -c "$W/nginx.conf" -p "$W" 2>/dev/null
sleep 1
for port in $P_CORRAL $P_NGINX; do
  body=$(curl -s --max-time 10 "http://127.0.0.1:$port/hello.php")
  [ "$body" = "Hello, world" ] || { echo "server on $port does not run PHP: $body" >&2; exit 1; }
done

# A front's master and its workers.
front_pids() { echo "$1 $(ps -o pid= --ppid "$1" | tr '\n' ' ')"; }
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
TICK=$(getconf CLK_TCK)
C_PIDS=$(front_pids "$CORRAL_PID")
N_PIDS=$(front_pids "$(cat "$W/nginx.pid")")
# Their workers: what the scheduling policy is switched on (masters stay as they are).
C_WORKERS=$(ps -o pid= --ppid "$CORRAL_PID" | tr '\n' ' ')
N_WORKERS=$(ps -o pid= --ppid "$(cat "$W/nginx.pid")" | tr '\n' ' ')
FPM_KIDS=$(ps -o pid= --ppid "$FPM_PID" | tr '\n' ' ')

run_one() { # port "front pids"
  local out reqs f0 f1 p0 p1
  sleep 3
  f0=$(cpu_ticks $2); p0=$(cpu_ticks $FPM_KIDS)
  out=$($BACK wrk -t2 -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$1/hello.php")
  f1=$(cpu_ticks $2); p1=$(cpu_ticks $FPM_KIDS)
  if echo "$out" | grep -qE 'Non-2xx|Socket errors'; then
    echo "WARNING: port $1: $(echo "$out" | grep -E 'Non-2xx|Socket errors' | tr -s ' ')" >&2
  fi
  reqs=$(echo "$out" | awk '/requests in/{print $1}')
  echo "$(echo "$out" | awk '/Requests\/sec/{print $2}') $(to_ms "$(echo "$out" | awk '$1=="99%"{print $2}')")" \
    "$(python3 -c "print(round(($f1-$f0)/$TICK*1e6/max($reqs,1),2), round(($p1-$p0)/$TICK*1e6/max($reqs,1),2))")"
}

# Warm-up: php-fpm's opcache and both fronts' pools.
wrk -t2 -c"$CONNS" -d3s "http://127.0.0.1:$P_CORRAL/hello.php" >/dev/null
sleep 3
wrk -t2 -c"$CONNS" -d3s "http://127.0.0.1:$P_NGINX/hello.php" >/dev/null

# The scheduling policy of every thread of the given processes.
policy() { local p; for p in $2; do chrt "$1" -a -p 0 "$p"; done; }
FRONTS="corral corral-other nginx nginx-batch"
declare -A R P C F
for name in $FRONTS; do R[$name]=0; P[$name]=0; C[$name]=0; F[$name]=0; done
printf '%-12s %5s %10s %8s %14s %12s\n' front round req/s p99_ms front_us/req fpm_us/req
# Rounds interleave the fronts so drift on a shared machine hits all alike.
for round in $(seq 1 "$ROUNDS"); do
  for name in $FRONTS; do
    case $name in
      corral) port=$P_CORRAL; w=$C_PIDS; policy --batch "$C_WORKERS" ;;
      corral-other) port=$P_CORRAL; w=$C_PIDS; policy --other "$C_WORKERS" ;;
      nginx) port=$P_NGINX; w=$N_PIDS; policy --other "$N_WORKERS" ;;
      nginx-batch) port=$P_NGINX; w=$N_PIDS; policy --batch "$N_WORKERS" ;;
    esac
    read -r rps p99 front fpm < <(run_one "$port" "$w")
    printf '%-12s %5s %10s %8s %14s %12s\n' $name "$round" "$rps" "$p99" "$front" "$fpm"
    R[$name]=$(python3 -c "print(${R[$name]}+$rps)")
    P[$name]=$(python3 -c "print(max(${P[$name]},$p99))")
    C[$name]=$(python3 -c "print(${C[$name]}+$front)")
    F[$name]=$(python3 -c "print(${F[$name]}+$fpm)")
  done
done
echo
echo "== mean of $ROUNDS rounds (p99: worst round), wrk -t2 -c$CONNS, $WORKERS worker(s) keeping $KEEPALIVE each, php-fpm static x$CHILDREN =="
for name in $FRONTS; do
  python3 -c "print('%-12s %8.0f req/s  p99 %6.2f ms  front %6.2f us/req  php-fpm %6.2f us/req' % ('$name', ${R[$name]}/$ROUNDS, ${P[$name]}, ${C[$name]}/$ROUNDS, ${F[$name]}/$ROUNDS))"
done
python3 -c "print('corral/nginx: req/s x%.2f, front cpu/req x%.2f (targets: > 1, <= 0.67)' % (${R[corral]}/${R[nginx]}, ${C[corral]}/${C[nginx]}))"
python3 -c "print('corral-other/nginx: req/s x%.2f, front cpu/req x%.2f' % (${R[corral-other]}/${R[nginx]}, ${C[corral-other]}/${C[nginx]}))"
python3 -c "print('corral/nginx-batch: req/s x%.2f, front cpu/req x%.2f' % (${R[corral]}/${R[nginx-batch]}, ${C[corral]}/${C[nginx-batch]}))"
for log in corral-error.log nginx-error.log fpm.log; do
  lines=$(grep -v -i notice "$W/$log" 2>/dev/null | head -5 || true)
  [ -z "$lines" ] || printf '%s:\n%s\n' "$log" "$lines"
done
