#!/usr/bin/env bash
# Load test of the gateway (PRODUCT §8) in one run, with one load tool
# (wrk), on loopback, against the same upstream (bench/gatewayup, keep-alive):
#   1. the upstream alone;
#   2. keyward's gateway, token auth with a scope and a rate limit (shipped
#      defaults: access log on, to a file; usage rollups and metrics on);
#   3. nginx proxy_pass with upstream keepalive, no auth (access log on);
#   4. nginx + auth_request to keyward's POST /v1/verify, the client's token
#      forwarded in the JSON body (access log on).
# Prints req/s, p50 and p99 of each and the throughput ratios
# keyward/nginx (target >= 0.8) and keyward/(nginx+auth_request) (>= 2).
#
# /v1/verify answers 200 for valid and invalid tokens alike (the outcome is
# in the body), so setup 4 measures the cost of the subrequest only; it
# would admit bad tokens. wrk measures peak throughput, not latency at a
# fixed rate. Usage: bash bench/gateway.sh [DURATION] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONNS=${2:-32}

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
if ((${#need[@]})); then apt-get update -qq && apt-get install -y -qq "${need[@]}"; fi

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

UP=127.0.0.1:18090 API=127.0.0.1:18080 GW=127.0.0.1:18081 NGX=127.0.0.1:18082 NGXA=127.0.0.1:18083

go build -o "$work/keyward" ./cmd/keyward
go build -o "$work/gatewayup" ./bench/gatewayup
export KEYWARD_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

"$work/gatewayup" -addr "$UP" &
pids+=($!)

# The gateway's workspace must exist before keyward serve starts it.
root=$("$work/keyward" init --data-dir "$work/data" --output json | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
cat >"$work/gateway.yaml" <<YAML
listen: $GW
workspace: default
routes:
  - name: orders
    path_prefix: /
    upstreams: [http://$UP]
    scopes: [orders:read]
YAML
"$work/keyward" serve --data-dir "$work/data" --addr "$API" --gateway-config "$work/gateway.yaml" >"$work/keyward.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fs "http://$API/readyz" >/dev/null && break; sleep 0.1; done
export KEYWARD_SERVER=http://$API
token() { KEYWARD_TOKEN=$root "$work/keyward" token create "$@" --output json | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p' | head -1; }
verifier=$(token --name bench-verifier --scope keyward:verify)
target=$(token --name bench-target --scope orders:read --rate-limit 1000000000/1m)

user=""
[[ $(id -u) == 0 ]] && user="user root;"
cat >"$work/nginx.conf" <<NGINX
$user
daemon off;
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
	access_log $work/nginx-access.log;
	client_body_temp_path $work/nginx-body;
	proxy_temp_path $work/nginx-proxy;
	fastcgi_temp_path $work/nginx-fastcgi;
	uwsgi_temp_path $work/nginx-uwsgi;
	scgi_temp_path $work/nginx-scgi;
	upstream app { server $UP; keepalive 64; }
	upstream keyward_api { server $API; keepalive 64; }
	map \$http_authorization \$kw_token { "~^Bearer\s+(?<t>\S+)\$" \$t; default ""; }
	server {
		listen $NGX;
		location / {
			proxy_pass http://app;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
		}
	}
	server {
		listen $NGXA;
		location / {
			auth_request /_keyward;
			proxy_pass http://app;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
		}
		location = /_keyward {
			internal;
			proxy_pass http://keyward_api/v1/verify;
			proxy_http_version 1.1;
			proxy_method POST;
			proxy_pass_request_body off;
			proxy_set_header Connection "";
			proxy_set_header Content-Type application/json;
			proxy_set_header Authorization "Bearer $verifier";
			proxy_set_body '{"token":"\$kw_token","scopes":["orders:read"]}';
		}
	}
}
NGINX
nginx -p "$work" -c "$work/nginx.conf" &
pids+=($!)
for _ in $(seq 50); do curl -fs "http://$NGX/" >/dev/null && break; sleep 0.1; done

# Every setup must answer 200 before it is measured.
for u in "http://$UP/orders/1" "http://$GW/orders/1" "http://$NGX/orders/1" "http://$NGXA/orders/1"; do
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $target" "$u")
	[[ $code == 200 ]] || { echo "$u answered $code"; cat "$work/keyward.log" "$work/nginx-error.log"; exit 1; }
done
code=$(curl -s -o /dev/null -w '%{http_code}' "http://$GW/orders/1")
[[ $code == 401 ]] || { echo "the gateway let a request without a token through: $code"; exit 1; }

load() { wrk -t1 -c"$CONNS" -d"$1" --latency -H "Authorization: Bearer $target" "$2" 2>&1; }
# ms from wrk's latency distribution line $1 (50% or 99%)
pct() { awk -v k="$1" '$1==k{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}'; }
rps() { awk '/Requests\/sec/{print $2}'; }

declare -A out
names=(upstream keyward nginx nginx_auth)
urls=("http://$UP/orders/1" "http://$GW/orders/1" "http://$NGX/orders/1" "http://$NGXA/orders/1")
for i in "${!names[@]}"; do
	load 3s "${urls[$i]}" >/dev/null # warm-up
	out[${names[$i]}]=$(load "$DURATION" "${urls[$i]}")
	if grep -q "Non-2xx\|Socket errors" <<<"${out[${names[$i]}]}"; then
		echo "${names[$i]} answered errors:"
		echo "${out[${names[$i]}]}"
		exit 1
	fi
done

printf '%-38s %12s %9s %9s\n' "setup (wrk -t1 -c$CONNS -d$DURATION)" "req/s" "p50 ms" "p99 ms"
declare -A label=([upstream]="upstream alone (gatewayup)" [keyward]="keyward gateway (auth + rate limit)" [nginx]="nginx proxy_pass, no auth" [nginx_auth]="nginx + auth_request /v1/verify")
for n in "${names[@]}"; do
	printf '%-38s %12s %9s %9s\n' "${label[$n]}" "$(rps <<<"${out[$n]}")" "$(pct 50% <<<"${out[$n]}")" "$(pct 99% <<<"${out[$n]}")"
done
k=$(rps <<<"${out[keyward]}") n=$(rps <<<"${out[nginx]}") a=$(rps <<<"${out[nginx_auth]}")
awk -v k="$k" -v n="$n" -v a="$a" 'BEGIN{
	printf "throughput keyward/nginx:              %.2f (target >= 0.8)\n", k/n
	printf "throughput keyward/(nginx+auth_request): %.2f (target >= 2)\n", k/a
}'
echo "logged by keyward: $(grep -c 'gateway request' "$work/keyward.log") access-log lines"
