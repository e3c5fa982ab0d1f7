#!/usr/bin/env bash
# Load test of the gateway (PRODUCT §8) in one run, with one load tool
# (wrk), on loopback, against the same upstream (bench/gatewayup, keep-alive):
#   1. the upstream alone;
#   2. keyward's gateway, token auth with a scope and a rate limit (shipped
#      defaults: access log on, to a file; usage rollups and metrics on);
#   3. nginx proxy_pass with upstream keepalive, no auth (access log on);
#   4. nginx + auth_request to keyward's POST /v1/verify, the client's token
#      forwarded in the JSON body (access log on);
#   5. for reference, bench/passthru: the floor of a Go proxy's cost (one
#      goroutine per connection, bytes copied, no HTTP parsing, no auth,
#      no log), to tell what of keyward's cost is its own work from what
#      any Go proxy pays here.
# Prints req/s, p50, p99 and CPU time per request of each (utime + stime of
# the proxy's own processes over the run, from /proc; steadier than
# throughput where the machine is shared) and the throughput ratios
# keyward/nginx (target >= 0.8) and keyward/(nginx+auth_request) (>= 2),
# and passthru/nginx (the most a Go proxy reaches here),
# per round and as median (min-max) over ROUNDS rounds. Then, at a fixed
# rate of half the gateway's median peak, open loop (bench/openloop), p50
# and p99 of the upstream alone, the gateway, nginx proxy_pass and passthru,
# and the added p99 of each proxy (the gateway's target: <= 1 ms), and
# under a round's line each stretch of it in which requests took over
# 20 ms (a stall).
#
# /v1/verify answers 200 for valid and invalid tokens alike (the outcome is
# in the body), so setup 4 measures the cost of the subrequest only; it
# would admit bad tokens. wrk measures peak throughput; its latencies are
# those of a closed loop at saturation, not latency at a fixed rate.
# Usage: bash bench/gateway.sh [DURATION] [CONNECTIONS] [ROUNDS] (10s 32 3; -h: this)
# (environment: FIXED, the length of each fixed-rate run, default 10s; RATE
# to fix the rate instead of deriving it; BODY, a JSON body that the peak
# runs POST instead of GET, e.g. BODY='{"item":"book","quantity":2}'; the
# fixed-rate runs stay GET)
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
	exit 0
fi
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONNS=${2:-32}
ROUNDS=${3:-3} # rounds differ here by more than a ratio's margin: medians
FIXED=${FIXED:-10s} # length of each fixed-rate run; RATE overrides its rate

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

UP=127.0.0.1:18090 API=127.0.0.1:18080 GW=127.0.0.1:18081 NGX=127.0.0.1:18082 NGXA=127.0.0.1:18083 PT=127.0.0.1:18084

go build -o "$work/keyward" ./cmd/keyward
go build -o "$work/gatewayup" ./bench/gatewayup
go build -o "$work/openloop" ./bench/openloop
go build -o "$work/passthru" ./bench/passthru
export KEYWARD_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

"$work/gatewayup" -addr "$UP" &
pids+=($!) pid_up=$!
"$work/passthru" -addr "$PT" -upstream "$UP" &
pids+=($!) pid_pt=$!

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
pids+=($!) pid_kw=$!
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
pids+=($!) pid_ngx=$!
for _ in $(seq 50); do curl -fs "http://$NGX/" >/dev/null && break; sleep 0.1; done
pid_ngxw=$(pgrep -P "$pid_ngx" | tr '\n' ' ')

# Every setup must answer 200 before it is measured.
for u in "http://$UP/orders/1" "http://$GW/orders/1" "http://$NGX/orders/1" "http://$NGXA/orders/1" "http://$PT/orders/1"; do
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $target" "$u")
	[[ $code == 200 ]] || { echo "$u answered $code"; cat "$work/keyward.log" "$work/nginx-error.log"; exit 1; }
done
code=$(curl -s -o /dev/null -w '%{http_code}' "http://$GW/orders/1")
[[ $code == 401 ]] || { echo "the gateway let a request without a token through: $code"; exit 1; }

script=()
if [[ -n ${BODY:-} ]]; then
	# wrk's Lua string: the body between long brackets, taken verbatim.
	printf 'wrk.method = "POST"\nwrk.body = [==[%s]==]\nwrk.headers["Content-Type"] = "application/json"\n' "$BODY" >"$work/post.lua"
	script=(-s "$work/post.lua")
	echo "peak runs: POST with a ${#BODY}-byte body"
fi
load() { wrk -t1 -c"$CONNS" -d"$1" --latency -H "Authorization: Bearer $target" "${script[@]}" "$2" 2>&1; }
# ms from wrk's latency distribution line $1 (50% or 99%)
pct() { awk -v k="$1" '$1==k{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}'; }
rps() { awk '/Requests\/sec/{print $2}'; }
# median and range of the numbers on stdin, one a line
spread() { sort -g | awk '{v[NR]=$1} END{m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; if (NR>1) printf "%.2f (%.2f-%.2f)", m, v[1], v[NR]; else printf "%.2f", m}'; }

# CPU time (utime + stime) of processes $1, in clock ticks
ticks() { for p in $1; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s += $1} END {print s + 0}'; }
hz=$(getconf CLK_TCK)
names=(upstream keyward nginx nginx_auth passthru)
urls=("http://$UP/orders/1" "http://$GW/orders/1" "http://$NGX/orders/1" "http://$NGXA/orders/1" "http://$PT/orders/1")
declare -A label=([upstream]="upstream alone (gatewayup)" [keyward]="keyward gateway (auth + rate limit)" [nginx]="nginx proxy_pass, no auth" [nginx_auth]="nginx + auth_request /v1/verify" [passthru]="Go pass-through floor (passthru)")
# Whose CPU each setup is charged: the proxy's processes (for nginx +
# auth_request, nginx's workers and keyward answering /v1/verify).
declare -A procs=([upstream]="$pid_up" [keyward]="$pid_kw" [nginx]="$pid_ngxw" [nginx_auth]="$pid_ngxw $pid_kw" [passthru]="$pid_pt")
declare -A res_rps res_p50 res_p99 res_cpu
for i in "${!names[@]}"; do load 3s "${urls[$i]}" >/dev/null; done # warm-up
# Rounds take the setups in turn, so that load from elsewhere on the
# machine falls on all of them alike; ratios are taken within a round.
ratio_n=() ratio_a=() ratio_p=() ratio_kp=() ratio_cpu=()
for round in $(seq "$ROUNDS"); do
	printf '\nround %d: %-30s %12s %9s %9s %12s\n' "$round" "setup (wrk -t1 -c$CONNS -d$DURATION)" "req/s" "p50 ms" "p99 ms" "CPU us/req"
	for i in "${!names[@]}"; do
		n=${names[$i]}
		t0=$(ticks "${procs[$n]}")
		out=$(load "$DURATION" "${urls[$i]}")
		t1=$(ticks "${procs[$n]}")
		if grep -q "Non-2xx\|Socket errors" <<<"$out"; then
			echo "$n answered errors:"
			echo "$out"
			exit 1
		fi
		r=$(rps <<<"$out") p50=$(pct 50% <<<"$out") p99=$(pct 99% <<<"$out")
		reqs=$(awk '/requests in/{print $1}' <<<"$out")
		cpu=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$reqs" 'BEGIN{printf "%.1f", t / hz * 1e6 / n}')
		res_rps[$n]+="$r " res_p50[$n]+="$p50 " res_p99[$n]+="$p99 " res_cpu[$n]+="$cpu "
		printf '         %-30s %12s %9s %9s %12s\n' "${label[$n]}" "$r" "$p50" "$p99" "$cpu"
		declare "last_$n=$r" "cpu_$n=$cpu"
	done
	ratio_n+=("$(awk -v k="$last_keyward" -v n="$last_nginx" 'BEGIN{print k/n}')")
	ratio_a+=("$(awk -v k="$last_keyward" -v a="$last_nginx_auth" 'BEGIN{print k/a}')")
	ratio_p+=("$(awk -v p="$last_passthru" -v n="$last_nginx" 'BEGIN{print p/n}')")
	ratio_kp+=("$(awk -v k="$last_keyward" -v p="$last_passthru" 'BEGIN{print k/p}')")
	ratio_cpu+=("$(awk -v k="$cpu_keyward" -v n="$cpu_nginx" 'BEGIN{print n/k}')")
done

echo
echo "median (min-max) over $ROUNDS round(s):"
printf '%-38s %26s %22s %22s %22s\n' "setup" "req/s" "p50 ms" "p99 ms" "CPU us/req"
for n in "${names[@]}"; do
	printf '%-38s %26s %22s %22s %22s\n' "${label[$n]}" \
		"$(tr ' ' '\n' <<<"${res_rps[$n]}" | grep . | spread)" \
		"$(tr ' ' '\n' <<<"${res_p50[$n]}" | grep . | spread)" \
		"$(tr ' ' '\n' <<<"${res_p99[$n]}" | grep . | spread)" \
		"$(tr ' ' '\n' <<<"${res_cpu[$n]}" | grep . | spread)"
done
echo "throughput keyward/nginx:                $(printf '%s\n' "${ratio_n[@]}" | spread) (target >= 0.8)"
echo "throughput keyward/(nginx+auth_request): $(printf '%s\n' "${ratio_a[@]}" | spread) (target >= 2)"
echo "throughput passthru/nginx:               $(printf '%s\n' "${ratio_p[@]}" | spread) (a Go proxy's ceiling here)"
echo "throughput keyward/passthru:             $(printf '%s\n' "${ratio_kp[@]}" | spread) (keyward's own work)"
echo "CPU per request, nginx/keyward:          $(printf '%s\n' "${ratio_cpu[@]}" | spread) (steadier than throughput on a shared machine)"

# Fixed rate: half of the gateway's median peak, the same rate for every
# setup, open loop (bench/openloop: latency from each request's due time).
peak=$(tr ' ' '\n' <<<"${res_rps[keyward]}" | grep . | sort -g | awk '{v[NR]=$1} END{print (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}')
RATE=${RATE:-$(awk -v p="$peak" 'BEGIN{printf "%d", p/2}')}
echo
echo "fixed rate: $RATE req/s for $FIXED each (half of the gateway's median peak), $CONNS connections at most"
declare -A fx_p50 fx_p99
for round in $(seq "$ROUNDS"); do
	for n in upstream keyward nginx passthru; do
		case $n in upstream) u=${urls[0]} ;; keyward) u=${urls[1]} ;; nginx) u=${urls[2]} ;; passthru) u=${urls[4]} ;; esac
		out=$("$work/openloop" -url "$u" -rate "$RATE" -duration "$FIXED" -conns "$CONNS" -slow 20ms -H "Authorization: Bearer $target" 2>"$work/stalls")
		printf 'round %d %-36s %s\n' "$round" "${label[$n]}" "$out"
		# Stretches of requests over 20 ms: a round's p99 far above the
		# others' is most often one of these, from whatever else ran then.
		sed 's/^openloop: /         /' "$work/stalls"
		grep -q "errors=0 " <<<"$out" || { echo "$n answered errors"; exit 1; }
		fx_p50[$n]+="$(sed -n 's/.* p50=\([0-9.]*\)ms.*/\1/p' <<<"$out") "
		fx_p99[$n]+="$(sed -n 's/.* p99=\([0-9.]*\)ms.*/\1/p' <<<"$out") "
	done
done
# added N: each round's p99 of setup N minus the upstream alone's in the
# same round, one a line.
added() {
	local -a u99 x99
	read -ra u99 <<<"${fx_p99[upstream]}"
	read -ra x99 <<<"${fx_p99[$1]}"
	for i in "${!u99[@]}"; do awk -v x="${x99[$i]}" -v u="${u99[$i]}" 'BEGIN{print x-u}'; done
}
printf '%-38s %22s %22s\n' "setup at $RATE req/s" "p50 ms" "p99 ms"
for n in upstream keyward nginx passthru; do
	printf '%-38s %22s %22s\n' "${label[$n]}" \
		"$(tr ' ' '\n' <<<"${fx_p50[$n]}" | grep . | spread)" \
		"$(tr ' ' '\n' <<<"${fx_p99[$n]}" | grep . | spread)"
done
echo "added p99, keyward minus upstream alone: $(added keyward | spread) ms (target <= 1)"
echo "added p99 of nginx proxy_pass, for scale: $(added nginx | spread) ms"
echo "added p99 of passthru, for scale:         $(added passthru | spread) ms"
echo "logged by keyward: $(grep -c 'gateway request' "$work/keyward.log") access-log lines"
