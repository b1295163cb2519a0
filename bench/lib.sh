# Shared by the bench scripts: source it after setting HERE and REPO.

# need CMD:PACKAGE... — installs the Debian package of each missing command.
need() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || [ -x "/usr/sbin/${pair%%:*}" ] || missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# The path of a command that may live in /usr/sbin, off a user's PATH.
bin_of() { command -v "$1" || echo "/usr/sbin/$1"; }

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# Builds corral and sets CORRAL to the binary.
build_corral() {
  (cd "$REPO" && cargo build --release -q)
  CORRAL="$REPO/target/release/corral"
}

# nginx's temporary directories, all in $1 (so it runs without /var/lib/nginx).
nginx_temp_paths() {
  echo "client_body_temp_path $1; proxy_temp_path $1; fastcgi_temp_path $1;"
  echo "  uwsgi_temp_path $1; scgi_temp_path $1;"
}

# A wrk latency ("850.00us", "1.20ms", "2.01s") in milliseconds.
to_ms() { python3 -c "
v='$1'
m={'us':0.001,'ms':1,'s':1000}
for u in ('us','ms','s'):
    if v.endswith(u): print(round(float(v[:-len(u)])*m[u],3)); break"; }

# The process that serves: a master's first child (its worker), or the
# process itself when it has none (lighttpd).
worker_of() {
  local master=$1 kids
  kids=$(ps -o pid= --ppid "$master" | tr -d ' ' | head -1)
  echo "${kids:-$master}"
}
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
TICK=$(getconf CLK_TCK)

# wrk_measure MASTER LABEL WRK_ARGS...: runs wrk against the server whose
# master (or only process) is MASTER; prints "req/s p99 cpu_us_per_request"
# with the serving process's CPU over the run, and warns on errors.
wrk_measure() {
  local wpid out reqs t0 t1 label=$2
  wpid=$(worker_of "$1")
  shift 2
  t0=$(cpu_ticks "$wpid")
  out=$(wrk "$@")
  t1=$(cpu_ticks "$wpid")
  reqs=$(echo "$out" | awk '/requests in/{print $1}')
  if echo "$out" | grep -qE 'Non-2xx|Socket errors'; then
    echo "WARNING: $label: $(echo "$out" | grep -E 'Non-2xx|Socket errors' | tr -s ' ')" >&2
  fi
  echo "$(echo "$out" | awk '/Requests\/sec/{print $2}') $(echo "$out" | awk '$1=="99%"{print $2}')" \
    "$(python3 -c "print(round(($t1-$t0)/$TICK*1e6/max($reqs,1),2))")"
}

# The scratch site of static.sh and tls.sh: $W (removed at exit, after the
# pids in PIDS are stopped) with www/1k.bin and www/100k.bin, readable by
# nginx's workers (they run as nobody); the descriptor limit raised.
static_site() {
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  W=$(mktemp -d /tmp/corral-bench.XXXXXX)
  PIDS=()
  trap stop_site EXIT
  mkdir -p "$W/www"
  chmod 755 "$W" "$W/www"
  head -c 1024 /dev/urandom >"$W/www/1k.bin"
  head -c 102400 /dev/urandom >"$W/www/100k.bin"
  chmod 644 "$W/www/"*.bin
}

stop_site() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.5
  rm -rf "$W"
}

# nginx at its fair best for static files (one worker, sendfile,
# open_file_cache, long keep-alive), around the server block given.
nginx_static_conf() {
  cat <<CONF
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $W/nginx.pid;
error_log $W/nginx-error.log warn;
events { worker_connections 16384; }
http {
  include /etc/nginx/mime.types;
  access_log off;
  sendfile on;
  tcp_nopush on;
  open_file_cache max=1000 inactive=60s;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  $(nginx_temp_paths "$W/nginx-tmp")
  $1
}
CONF
}
