#!/usr/bin/env bash
# HTTPS: corral (rustls, aws-lc-rs) vs nginx (Debian's, OpenSSL), same
# machine, same run, same ECDSA P-256 certificate, same load (wrk).
#   bench/tls.sh [rounds] [seconds]
# Three loads, each on one worker:
#   handshake  a new connection (full handshake, no resumption) per request
#              of a 1 KiB file: handshakes per second and CPU per handshake.
#              wrk runs 2 threads here: its own handshake work is as heavy as
#              the server's, and with one thread wrk alone is the limit (a
#              server that idles between connections then even loses rate, as
#              each client write must wake it);
#   1k         1 KiB file on keep-alive connections;
#   100k       100 KiB file on keep-alive connections.
# Prints req/s, p99 latency and worker CPU µs per request, then the ratios
# corral/nginx, and the memory per idle TLS keep-alive connection (worker RSS
# growth with IDLE=2000 connections). TLS 1.3 is what wrk negotiates with both (X25519,
# TLS_AES_256_GCM_SHA384); TLS12=1 caps both servers at TLS 1.2.
set -euo pipefail
ROUNDS=${1:-3}
SECS=${2:-5}
CONNS=${CONNS:-50}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")

. "$HERE/lib.sh"
need wrk:wrk nginx:nginx-light openssl:openssl
NGINX=$(bin_of nginx)
build_corral

static_site
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/key.pem" \
  -out "$W/cert.pem" -days 30 -subj /CN=bench.test -addext subjectAltName=DNS:bench.test 2>/dev/null
chmod 644 "$W/key.pem"
P_CORRAL=$(free_port); P_NGINX=$(free_port)
if [ "${TLS12:-0}" = 1 ]; then
  CORRAL_PROTOCOLS='tls_protocols = ["TLSv1.2"]'; NGINX_PROTOCOLS=TLSv1.2
else
  CORRAL_PROTOCOLS=''; NGINX_PROTOCOLS='TLSv1.2 TLSv1.3'
fi

cat >"$W/corral.toml" <<CONF
[main]
workers = 1
worker_connections = 16384
pid = "$W/corral.pid"
error_log = "$W/corral-error.log"
log_level = "warn"
[http]
keepalive_requests = 1000000
[[server]]
listen = "127.0.0.1:$P_CORRAL tls"
root = "$W/www"
access_log = "off"
certificate = "$W/cert.pem"
certificate_key = "$W/key.pem"
$CORRAL_PROTOCOLS
CONF

nginx_static_conf "server {
    listen 127.0.0.1:$P_NGINX ssl;
    root $W/www;
    ssl_certificate $W/cert.pem;
    ssl_certificate_key $W/key.pem;
    ssl_protocols $NGINX_PROTOCOLS;
  }" >"$W/nginx.conf"

"$CORRAL" -c "$W/corral.toml" & PIDS+=($!)
"$NGINX" -c "$W/nginx.conf" -p "$W" 2>/dev/null & PIDS+=($!)
sleep 1
for p in $P_CORRAL $P_NGINX; do
  curl -sk "https://127.0.0.1:$p/1k.bin" -o /dev/null || { echo "server on $p does not answer" >&2; exit 1; }
done
echo "negotiated: $(echo | openssl s_client -connect "127.0.0.1:$P_CORRAL" -brief 2>&1 | grep -E 'Protocol|Ciphersuite|Temp Key' | tr '\n' ' ')"

target() {
  case $1 in
    corral) echo "$P_CORRAL ${PIDS[0]}" ;;
    nginx) echo "$P_NGINX ${PIDS[1]}" ;;
  esac
}

run_one() { # name port load master
  local file hdr=() threads=1
  case $3 in
    handshake) file=1k.bin; hdr=(-H "Connection: close"); threads=${HS_THREADS:-2} ;;
    1k) file=1k.bin ;;
    100k) file=100k.bin ;;
  esac
  wrk_measure "$4" "$1 $3" -t"$threads" -c"$CONNS" -d"${SECS}s" --latency "${hdr[@]}" "https://127.0.0.1:$2/$file"
}

declare -A RPS P99 CPU
printf '%-7s %-10s %5s %12s %10s %12s\n' server load round req/s p99_ms cpu_us/req
for load in handshake 1k 100k; do
  for name in corral nginx; do
    read -r port pid < <(target $name)
    sum_r=0; sum_c=0; worst=0
    for round in $(seq 1 "$ROUNDS"); do
      read -r rps p99 us < <(run_one $name "$port" $load "$pid")
      p99ms=$(to_ms "$p99")
      printf '%-7s %-10s %5s %12s %10s %12s\n' $name $load "$round" "$rps" "$p99ms" "$us"
      sum_r=$(python3 -c "print($sum_r+$rps)"); sum_c=$(python3 -c "print($sum_c+$us)")
      worst=$(python3 -c "print(max($worst,$p99ms))")
    done
    RPS[$name,$load]=$(python3 -c "print(round($sum_r/$ROUNDS))")
    CPU[$name,$load]=$(python3 -c "print(round($sum_c/$ROUNDS,2))")
    P99[$name,$load]=$worst
  done
done

echo
echo "== mean of $ROUNDS rounds (p99: worst round) =="
printf '%-7s %-10s %10s %9s %11s\n' server load req/s p99_ms cpu_us/req
for load in handshake 1k 100k; do
  for name in corral nginx; do
    printf '%-7s %-10s %10s %9s %11s\n' $name $load "${RPS[$name,$load]}" "${P99[$name,$load]}" "${CPU[$name,$load]}"
  done
done
echo
for load in handshake 1k 100k; do
  python3 -c "print('corral/nginx $load: req/s x%.2f, cpu/req x%.2f' % (${RPS[corral,$load]}/${RPS[nginx,$load]}, ${CPU[corral,$load]}/${CPU[nginx,$load]}))"
done
for name in corral nginx; do
  read -r port pid < <(target $name)
  echo "$name worker RSS after the runs: $(rss_kib "$(worker_of "$pid")") KiB"
done

IDLE=${IDLE:-2000}
echo
echo "== memory per idle TLS keep-alive connection ($IDLE connections) =="
for name in corral nginx; do
  read -r port pid < <(target $name)
  wpid=$(worker_of "$pid")
  before=$(rss_kib "$wpid")
  coproc IDLER { python3 "$HERE/idle_tls.py" "$port" "$IDLE" /1k.bin; }
  read -r line <&"${IDLER[0]}"
  after=$(rss_kib "$wpid")
  exec {IDLER[1]}>&-
  wait "$IDLER_PID" 2>/dev/null || true
  python3 -c "print('%-7s RSS %d KiB -> %d KiB: %.0f bytes per idle connection' % ('$name', $before, $after, ($after-$before)*1024/$IDLE))"
  sleep 1
done
