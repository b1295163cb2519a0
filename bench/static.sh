#!/usr/bin/env bash
# Static files: corral vs nginx vs lighttpd, same machine, same run, same load.
#   bench/static.sh [rounds] [seconds]
#   LOCATIONS=1 bench/static.sh ...   corral and nginx with 10 locations (3 regexes)
# Needs wrk, nginx and lighttpd (Debian packages; installed if missing and root).
# Prints req/s, p99 latency and worker CPU µs per request for a 1 KiB and a
# 100 KiB file, the ratios corral/nginx and corral/lighttpd, and the memory per
# idle keep-alive connection (worker RSS growth with 10,000 idle connections).
set -euo pipefail
ROUNDS=${1:-3}
SECS=${2:-5}
CONNS=${CONNS:-50}
LOCATIONS=${LOCATIONS:-0}
IDLE=${IDLE:-10000}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")

. "$HERE/lib.sh"
need wrk:wrk nginx:nginx-light lighttpd:lighttpd
NGINX=$(bin_of nginx)
LIGHTTPD=$(bin_of lighttpd)
build_corral

static_site
P_CORRAL=$(free_port); P_NGINX=$(free_port); P_LIGHTTPD=$(free_port)

cat >"$W/corral.toml" <<CONF
[main]
workers = 1
worker_connections = 16384
pid = "$W/corral.pid"
error_log = "$W/corral-error.log"
log_level = "warn"
[[server]]
listen = "127.0.0.1:$P_CORRAL"
root = "$W/www"
access_log = "off"
CONF
# The routing the issue measures: 10 locations of every kind, 3 of them
# regexes, the files served by "/" after all three regexes were tried.
if [ "$LOCATIONS" = 1 ]; then
  cat >>"$W/corral.toml" <<'CONF'
[[server.location]]
match = "= /health"
return = "200 ok"
[[server.location]]
match = "/api/"
return = "403"
[[server.location]]
match = "^~ /static/"
[[server.location]]
match = "~* \\.(png|jpe?g|gif|webp)$"
[[server.location]]
match = "~ ^/user/(?<name>[a-z]+)$"
return = "302 /u?n=$name"
[[server.location]]
match = "~ \\.php$"
return = "404"
[[server.location]]
match = "/downloads/"
autoindex = true
[[server.location]]
match = "/old/"
return = "301 https://$host$request_uri"
[[server.location]]
match = "= /favicon.ico"
return = "204"
[[server.location]]
match = "/"
CONF
  NGINX_LOCATIONS='location = /health { return 200 ok; }
    location /api/ { return 403; }
    location ^~ /static/ { }
    location ~* \.(png|jpe?g|gif|webp)$ { }
    location ~ ^/user/(?<name>[a-z]+)$ { return 302 /u?n=$name; }
    location ~ \.php$ { return 404; }
    location /downloads/ { autoindex on; }
    location /old/ { return 301 https://$host$request_uri; }
    location = /favicon.ico { return 204; }
    location / { }'
else
  NGINX_LOCATIONS=''
fi

nginx_static_conf "server { listen 127.0.0.1:$P_NGINX; root $W/www; $NGINX_LOCATIONS }" >"$W/nginx.conf"

cat >"$W/lighttpd.conf" <<CONF
server.document-root = "$W/www"
server.port = $P_LIGHTTPD
server.bind = "127.0.0.1"
server.pid-file = "$W/lighttpd.pid"
server.errorlog = "$W/lighttpd-error.log"
server.max-keep-alive-requests = 1000000
server.max-keep-alive-idle = 75
server.max-fds = 20000
server.max-connections = 16384
CONF

"$CORRAL" -c "$W/corral.toml" & PIDS+=($!)
"$NGINX" -c "$W/nginx.conf" -p "$W" 2>/dev/null & PIDS+=($!)
"$LIGHTTPD" -D -f "$W/lighttpd.conf" & PIDS+=($!)
sleep 1

# "port pid" of a server by name.
target() {
  case $1 in
    corral) echo "$P_CORRAL ${PIDS[0]}" ;;
    nginx) echo "$P_NGINX ${PIDS[1]}" ;;
    lighttpd) echo "$P_LIGHTTPD ${PIDS[2]}" ;;
  esac
}

declare -A RPS P99 CPU
run_one() { # name port file master
  wrk_measure "$4" "$1 $3" -t1 -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$2/$3"
}
printf '%-9s %-9s %5s %12s %10s %12s\n' server file round req/s p99_ms cpu_us/req
for file in 1k.bin 100k.bin; do
  for name in corral nginx lighttpd; do
    read -r port pid < <(target $name)
    sum_r=0; sum_c=0; worst=0
    for round in $(seq 1 "$ROUNDS"); do
      read -r rps p99 us < <(run_one $name $port $file $pid)
      p99ms=$(to_ms "$p99")
      printf '%-9s %-9s %5s %12s %10s %12s\n' $name $file $round "$rps" "$p99ms" "$us"
      sum_r=$(python3 -c "print($sum_r+$rps)"); sum_c=$(python3 -c "print($sum_c+$us)")
      worst=$(python3 -c "print(max($worst,$p99ms))")
    done
    RPS[$name,$file]=$(python3 -c "print(round($sum_r/$ROUNDS))")
    CPU[$name,$file]=$(python3 -c "print(round($sum_c/$ROUNDS,2))")
    P99[$name,$file]=$worst
  done
done

echo
echo "== mean of $ROUNDS rounds (p99: worst round) =="
printf '%-9s %-9s %10s %9s %11s\n' server file req/s p99_ms cpu_us/req
for file in 1k.bin 100k.bin; do
  for name in corral nginx lighttpd; do
    printf '%-9s %-9s %10s %9s %11s\n' $name $file "${RPS[$name,$file]}" "${P99[$name,$file]}" "${CPU[$name,$file]}"
  done
done
echo
for file in 1k.bin 100k.bin; do
  for other in nginx lighttpd; do
    python3 -c "print('corral/$other $file: req/s x%.2f, cpu/req x%.2f' % (${RPS[corral,$file]}/${RPS[$other,$file]}, ${CPU[corral,$file]}/${CPU[$other,$file]}))"
  done
done

echo
echo "== memory per idle keep-alive connection ($IDLE connections) =="
for name in corral nginx lighttpd; do
  read -r port pid < <(target $name)
  wpid=$(worker_of "$pid")
  before=$(rss_kib "$wpid")
  coproc IDLER { python3 "$HERE/idle_conns.py" "$port" "$IDLE" /1k.bin; }
  read -r line <&"${IDLER[0]}"
  after=$(rss_kib "$wpid")
  exec {IDLER[1]}>&-
  wait "$IDLER_PID" 2>/dev/null || true
  python3 -c "print('%-9s RSS %d KiB -> %d KiB: %.0f bytes per idle connection' % ('$name', $before, $after, ($after-$before)*1024/$IDLE))"
  sleep 1
done
