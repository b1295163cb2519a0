#!/usr/bin/env bash
# CGI "hello" requests per second: corral vs nginx + fcgiwrap vs lighttpd mod_cgi.
#   bench/cgi.sh [rounds=3] [seconds=10]
# Same /bin/sh script for all three, `wrk -t1 -c16`, keep-alive, access logs off.
# corral and nginx run one worker; fcgiwrap runs 2 children; lighttpd is one process.
set -euo pipefail
ROUNDS=${1:-3}
SECS=${2:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
. "$HERE/lib.sh"
need wrk:wrk nginx:nginx-light lighttpd:lighttpd fcgiwrap:fcgiwrap
NGINX=$(bin_of nginx)
LIGHTTPD=$(bin_of lighttpd)
FCGIWRAP=$(bin_of fcgiwrap)
build_corral

W=$(mktemp -d /tmp/corral-cgi.XXXXXX)
PIDS=()
FCGI=
cleanup() {
  # fcgiwrap's children outlive their parent: stop them by pid too.
  if [ -n "$FCGI" ]; then
    for p in $(ps -o pid= --ppid "$FCGI") "$FCGI"; do kill -TERM "$p" 2>/dev/null || true; done
  fi
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  [ -f "$W/nginx.pid" ] && kill -TERM "$(cat "$W/nginx.pid")" 2>/dev/null || true
  sleep 0.5
  rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/www/cgi-bin" "$W/nginx-tmp"
chmod -R 755 "$W"
cat >"$W/www/cgi-bin/hello.sh" <<'SH'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\nhello\n'
SH
chmod 755 "$W/www/cgi-bin/hello.sh"
P_CORRAL=$(free_port); P_NGINX=$(free_port); P_LIGHTTPD=$(free_port)

cat >"$W/corral.toml" <<CONF
[main]
workers = 1
pid = "$W/corral.pid"
error_log = "$W/corral-error.log"
log_level = "warn"
[[server]]
listen = "127.0.0.1:$P_CORRAL"
root = "$W/www"
[[server.cgi]]
prefix = "/cgi-bin/"
dir = "$W/www/cgi-bin"
CONF
cat >"$W/nginx.conf" <<CONF
worker_processes 1;
daemon on;
pid $W/nginx.pid;
error_log $W/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  $(nginx_temp_paths "$W/nginx-tmp")
  server {
    listen 127.0.0.1:$P_NGINX;
    root $W/www;
    location /cgi-bin/ {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
      fastcgi_pass unix:$W/fcgiwrap.sock;
    }
  }
}
CONF
cat >"$W/lighttpd.conf" <<CONF
server.modules = ("mod_cgi")
server.document-root = "$W/www"
server.port = $P_LIGHTTPD
server.bind = "127.0.0.1"
server.pid-file = "$W/lighttpd.pid"
server.errorlog = "$W/lighttpd-error.log"
server.max-keep-alive-requests = 1000000
\$HTTP["url"] =~ "^/cgi-bin/" { cgi.assign = ( ".sh" => "" ) }
CONF

"$CORRAL" -c "$W/corral.toml" & PIDS+=($!)
"$FCGIWRAP" -c 2 -s "unix:$W/fcgiwrap.sock" >/dev/null 2>&1 & FCGI=$!
"$LIGHTTPD" -D -f "$W/lighttpd.conf" & PIDS+=($!)
sleep 0.5
chmod 777 "$W/fcgiwrap.sock" 2>/dev/null || true
"$NGINX" -c "$W/nginx.conf" -p "$W" 2>/dev/null
sleep 1
for port in $P_CORRAL $P_NGINX $P_LIGHTTPD; do
  body=$(curl -s --max-time 10 "http://127.0.0.1:$port/cgi-bin/hello.sh")
  [ "$body" = "hello" ] || { echo "server on $port does not answer the script: $body" >&2; exit 1; }
done

declare -A SUM
printf '%-16s %5s %10s %10s\n' server round req/s p99
for name in corral nginx+fcgiwrap lighttpd; do SUM[$name]=0; done
# Rounds interleave the servers so drift on a shared machine hits all alike.
for round in $(seq 1 "$ROUNDS"); do
  for name in corral nginx+fcgiwrap lighttpd; do
    case $name in corral) port=$P_CORRAL ;; nginx+fcgiwrap) port=$P_NGINX ;; *) port=$P_LIGHTTPD ;; esac
    out=$(wrk -t1 -c16 -d"${SECS}s" --latency "http://127.0.0.1:$port/cgi-bin/hello.sh")
    rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
    p99=$(echo "$out" | awk '$1=="99%"{print $2}')
    if echo "$out" | grep -qE 'Non-2xx|Socket errors'; then
      echo "WARNING $name: $(echo "$out" | grep -E 'Non-2xx|Socket errors' | tr -s ' ')" >&2
    fi
    printf '%-16s %5s %10s %10s\n' "$name" "$round" "$rps" "$p99"
    SUM[$name]=$(python3 -c "print(${SUM[$name]}+$rps)")
  done
done
echo
for name in corral nginx+fcgiwrap lighttpd; do
  printf '%-16s mean %8.0f req/s\n' "$name" "$(python3 -c "print(${SUM[$name]}/$ROUNDS)")"
done
python3 -c "print('corral/nginx+fcgiwrap x%.2f, corral/lighttpd x%.2f' % (${SUM[corral]}/${SUM[nginx+fcgiwrap]}, ${SUM[corral]}/${SUM[lighttpd]}))"
