#!/usr/bin/env bash
# Application pools, with the same nginx front for both sides of each pair:
#   1. PHP hello: a corral pool of php-cgi vs php-fpm (pm static, same count),
#      as configured by default (`direct`: php-cgi accepts on the pool's
#      socket itself), relaying (`direct = false`), and relaying with
#      cpu_affinity = "auto"
#   2. a CGI script per request: a corral `app = "cgi"` pool vs fcgiwrap
#   3. ondemand: corral's own cost from a waiting connection to a forked
#      worker ready to accept (from its log line), and the first-request
#      latency of an idle ondemand pool, corral vs php-fpm
#   bench/pools.sh [rounds=3] [seconds=10]      CONNS=16 CHILDREN=4
# nginx: one worker, `fastcgi_keep_conn on` + upstream keepalive for both PHP
# sides (the fair best); fcgiwrap and the CGI pool without keepalive (fcgiwrap
# closes after each request).
set -euo pipefail
ROUNDS=${1:-3}
SECS=${2:-10}
CONNS=${CONNS:-16}
CHILDREN=${CHILDREN:-4}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
. "$HERE/lib.sh"
need wrk:wrk nginx:nginx-light php-fpm8.2:php-fpm php-cgi:php-cgi fcgiwrap:fcgiwrap
NGINX=$(bin_of nginx)
FPM=$(ls /usr/sbin/php-fpm* | sort | tail -1)
build_corral

W=$(mktemp -d /tmp/corral-pools.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  [ -n "${WRAP:-}" ] && kill -TERM -- "-$WRAP" 2>/dev/null || true
  [ -f "$W/nginx.pid" ] && kill -TERM "$(cat "$W/nginx.pid")" 2>/dev/null || true
  sleep 0.5
  rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/www" "$W/nginx-tmp"
chmod -R 755 "$W"
printf '<?php echo "Hello, world\\n";\n' >"$W/www/hello.php"
printf '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nHello, world\\n"\n' >"$W/www/hello.cgi"
chmod 755 "$W/www/hello.cgi"
P_POOL=$(free_port); P_FPM=$(free_port); P_CGI=$(free_port); P_WRAP=$(free_port)
P_OD=$(free_port); P_FPMOD=$(free_port); P_PIN=$(free_port); P_DIR=$(free_port)

cat >"$W/fpm.conf" <<CONF
[global]
pid = $W/fpm.pid
error_log = $W/fpm.log
daemonize = no
[static]
listen = $W/fpm.sock
listen.mode = 0666
pm = static
pm.max_children = $CHILDREN
[od]
listen = $W/fpm-od.sock
listen.mode = 0666
pm = ondemand
pm.max_children = $CHILDREN
pm.process_idle_timeout = 1s
CONF
cat >"$W/corral.toml" <<CONF
[main]
pid = "$W/corral.pid"
error_log = "$W/corral-error.log"
log_level = "info"
[pool.php]
listen = "unix:$W/php.sock"
listen_mode = "0666"
command = ["php-cgi"]
pm = "static"
max_children = $CHILDREN
direct = false
[pool.direct]
listen = "unix:$W/direct.sock"
listen_mode = "0666"
command = ["php-cgi"]
pm = "static"
max_children = $CHILDREN
[pool.pinned]
listen = "unix:$W/pinned.sock"
listen_mode = "0666"
command = ["php-cgi"]
pm = "static"
max_children = $CHILDREN
cpu_affinity = "auto"
direct = false
[pool.cgi]
listen = "unix:$W/cgi.sock"
listen_mode = "0666"
app = "cgi"
pm = "static"
max_children = $CHILDREN
[pool.od]
listen = "unix:$W/od.sock"
listen_mode = "0666"
command = ["php-cgi"]
pm = "ondemand"
max_children = $CHILDREN
process_idle_timeout = "1s"
CONF
php_server() { # port upstream
  cat <<CONF
  server {
    listen 127.0.0.1:$1;
    root $W/www;
    location ~ \.php\$ {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
      fastcgi_keep_conn on;
      fastcgi_pass $2;
    }
    location ~ \.cgi\$ {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
      fastcgi_pass $2;
    }
  }
CONF
}
cat >"$W/nginx.conf" <<CONF
worker_processes 1;
daemon on;
pid $W/nginx.pid;
error_log $W/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  $(nginx_temp_paths "$W/nginx-tmp")
  upstream pool { server unix:$W/php.sock; keepalive $CHILDREN; keepalive_timeout 1s; }
  upstream fpm { server unix:$W/fpm.sock; keepalive $CHILDREN; keepalive_timeout 1s; }
  upstream pinned { server unix:$W/pinned.sock; keepalive $CHILDREN; keepalive_timeout 1s; }
  upstream direct { server unix:$W/direct.sock; keepalive $CHILDREN; keepalive_timeout 1s; }
$(php_server "$P_POOL" pool)
$(php_server "$P_FPM" fpm)
$(php_server "$P_PIN" pinned)
$(php_server "$P_DIR" direct)
$(php_server "$P_CGI" "unix:$W/cgi.sock")
$(php_server "$P_WRAP" "unix:$W/fcgiwrap.sock")
$(php_server "$P_OD" "unix:$W/od.sock")
$(php_server "$P_FPMOD" "unix:$W/fpm-od.sock")
}
CONF

"$FPM" -F -R -y "$W/fpm.conf" >/dev/null 2>&1 & PIDS+=($!)
FPM_PID=$!
"$CORRAL" -c "$W/corral.toml" & PIDS+=($!)
# In a group of its own: fcgiwrap -c forks children that must go with it.
setsid fcgiwrap -c "$CHILDREN" -s "unix:$W/fcgiwrap.sock" & WRAP=$!
sleep 1
chmod 666 "$W/fcgiwrap.sock"
"$NGINX" -c "$W/nginx.conf" -p "$W" 2>/dev/null
sleep 1
for port in $P_DIR $P_POOL $P_FPM $P_PIN; do
  body=$(curl -s --max-time 10 "http://127.0.0.1:$port/hello.php")
  [ "$body" = "Hello, world" ] || { echo "port $port does not run PHP: $body" >&2; exit 1; }
done
for port in $P_CGI $P_WRAP; do
  body=$(curl -s --max-time 10 "http://127.0.0.1:$port/hello.cgi")
  [ "$body" = "Hello, world" ] || { echo "port $port does not run CGI: $body" >&2; exit 1; }
done

run_one() { # port path -> req/s p99_ms
  local out
  sleep 2
  out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$1$2")
  if echo "$out" | grep -qE 'Non-2xx|Socket errors'; then
    echo "WARNING: port $1: $(echo "$out" | grep -E 'Non-2xx|Socket errors' | tr -s ' ')" >&2
  fi
  echo "$(echo "$out" | awk '/Requests\/sec/{print $2}') $(echo "$out" | awk '$1=="99%"{print $2}')"
}

pair() { # title path nameA portA nameB portB target
  local a=0 b=0 r rps p99
  echo "== $1 (wrk -t2 -c$CONNS -d${SECS}s, $ROUNDS interleaved rounds) =="
  wrk -t2 -c"$CONNS" -d3s "http://127.0.0.1:$4$2" >/dev/null
  wrk -t2 -c"$CONNS" -d3s "http://127.0.0.1:$6$2" >/dev/null
  for r in $(seq 1 "$ROUNDS"); do
    read -r rps p99 < <(run_one "$4" "$2"); printf '%-16s %3s %10s req/s  p99 %s\n' "$3" "$r" "$rps" "$p99"
    a=$(python3 -c "print($a+$rps)")
    read -r rps p99 < <(run_one "$6" "$2"); printf '%-16s %3s %10s req/s  p99 %s\n' "$5" "$r" "$rps" "$p99"
    b=$(python3 -c "print($b+$rps)")
  done
  python3 -c "print('%s %.0f req/s, %s %.0f req/s: ratio x%.2f (%s)' % ('$3', $a/$ROUNDS, '$5', $b/$ROUNDS, $a/$b, '$7'))"
  echo
}

pair "PHP hello: corral pool of php-cgi (default: direct) vs php-fpm, pm static x$CHILDREN" /hello.php \
  corral-direct "$P_DIR" php-fpm "$P_FPM" "target >= 0.90"
pair "PHP hello: corral relaying pool of php-cgi (direct = false) vs php-fpm, pm static x$CHILDREN" /hello.php \
  corral-php-cgi "$P_POOL" php-fpm "$P_FPM" "target >= 0.90"
pair "PHP hello: the relaying pool with cpu_affinity = \"auto\" vs php-fpm" /hello.php \
  corral-pinned "$P_PIN" php-fpm "$P_FPM" "target >= 0.90"
pair "CGI per request: corral app=cgi pool vs fcgiwrap, x$CHILDREN" /hello.cgi \
  corral-cgi "$P_CGI" fcgiwrap "$P_WRAP" "target >= 1.30"

echo "== ondemand: first request to an idle pool (process_idle_timeout 1s), 5 samples =="
first() { # port
  local t s=""
  for i in 1 2 3 4 5; do
    sleep 2.5   # every worker retired
    t=$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$1/hello.php")
    s="$s $(python3 -c "print(round($t*1000,2))")"
  done
  echo "$s"
}
C=$(first "$P_OD"); F=$(first "$P_FPMOD")
echo "corral ondemand first request ms:$C"
echo "php-fpm ondemand first request ms:$F"
echo "corral's own cost, waiting connection -> forked worker ready to accept (us, without the program's spawn):"
grep 'pool od\] worker .* ready to accept' "$W/corral-error.log" | tail -5 |
  sed -E 's/.*ready to accept ([0-9]+) us .*program spawn ([0-9]+) us.*/\1 \2/' |
  awk '{ printf "  total %s us, program spawn %s us, corral %s us\n", $1, $2, $1-$2 }'
for log in corral-error.log nginx-error.log fpm.log; do
  lines=$(grep -v -iE 'notice|\[info\]' "$W/$log" 2>/dev/null | head -5 || true)
  [ -z "$lines" ] || printf '%s:\n%s\n' "$log" "$lines"
done
