#!/usr/bin/env bash
# Load test of POST /v1/verify against a bare net/http handler that returns
# the same JSON, in one run, with the same load tool (wrk), on loopback.
# Prints requests/s and p99 of each and the throughput ratio (target ≥ 0.7).
# A second keyward process on the same store runs with usage counting off
# (--usage=false); the two are loaded in turn, twice each, for the cost of
# usage counting (target ≤ 5%).
#
# keyward runs its shipped defaults: access log (to a file), usage counting
# and metrics on. Usage: bash bench/verify-http.sh [DURATION] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONNS=${2:-32}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

go build -o "$work/keyward" ./cmd/keyward
go build -o "$work/bare" ./bench/bare
export KEYWARD_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

"$work/keyward" serve --data-dir "$work/data" --addr 127.0.0.1:18080 >"$work/keyward.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -fs http://127.0.0.1:18080/readyz >/dev/null && break; sleep 0.1; done
root=$("$work/keyward" init --data-dir "$work/data" --output json | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
export KEYWARD_SERVER=http://127.0.0.1:18080
verifier=$(KEYWARD_TOKEN=$root "$work/keyward" token create --name bench-verifier --scope keyward:verify --output json | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p' | head -1)
target=$(KEYWARD_TOKEN=$root "$work/keyward" token create --name bench-target --scope orders:read --rate-limit 1000000000/1m --output json | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p' | head -1)

body="{\"token\":\"$target\",\"scopes\":[\"orders:read\"]}"
curl -fs -H "Authorization: Bearer $verifier" -d "$body" http://127.0.0.1:18080/v1/verify >"$work/response.json"
"$work/bare" -addr 127.0.0.1:18081 -body "$work/response.json" &
pids+=($!)
# A second serve may not open the same data dir (serve locks it): the
# usage-off one runs on a copy, with the same tokens and server secret.
"$work/keyward" backup --data-dir "$work/data" --output-file "$work/copy.db" >/dev/null
"$work/keyward" restore --data-dir "$work/data-nousage" --from "$work/copy.db" >/dev/null
"$work/keyward" serve --data-dir "$work/data-nousage" --addr 127.0.0.1:18082 --usage=false >"$work/keyward-nousage.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -fs http://127.0.0.1:18082/readyz >/dev/null && break; sleep 0.1; done
curl -fs http://127.0.0.1:18082/readyz >/dev/null || { echo "the usage-off keyward did not start:"; cat "$work/keyward-nousage.log"; exit 1; }
sleep 0.3

cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $verifier"
LUA

load() { wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s "$work/post.lua" "$1" 2>&1; }
# p99 in ms from wrk's latency distribution
p99() { awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}'; }
rps() { awk '/Requests\/sec/{print $2}'; }

load http://127.0.0.1:18081/v1/verify >/dev/null # warm-up
bare=$(load http://127.0.0.1:18081/v1/verify)
load http://127.0.0.1:18080/v1/verify >/dev/null
kw=$(load http://127.0.0.1:18080/v1/verify)
grep -q "Non-2xx" <<<"$kw" && { echo "keyward answered errors:"; echo "$kw"; exit 1; }

b_rps=$(rps <<<"$bare"); k_rps=$(rps <<<"$kw")
printf '%-34s %12s %10s\n' "server" "req/s" "p99 ms"
printf '%-34s %12s %10s\n' "bare net/http (same JSON)" "$b_rps" "$(p99 <<<"$bare")"
printf '%-34s %12s %10s\n' "keyward POST /v1/verify" "$k_rps" "$(p99 <<<"$kw")"
awk -v k="$k_rps" -v b="$b_rps" 'BEGIN{printf "throughput ratio keyward/bare: %.2f (target >= 0.70)\n", k/b}'

# Usage counting on vs off, loaded in turn.
load http://127.0.0.1:18082/v1/verify >/dev/null
on=0; off=0
for _ in 1 2; do
  r=$(load http://127.0.0.1:18082/v1/verify); off=$(awk -v a="$off" -v b="$(rps <<<"$r")" 'BEGIN{print a+b}')
  r=$(load http://127.0.0.1:18080/v1/verify); on=$(awk -v a="$on" -v b="$(rps <<<"$r")" 'BEGIN{print a+b}')
done
dropped=$(curl -fs http://127.0.0.1:18080/metrics | awk '$1=="keyward_usage_events_dropped_total"{print $2}')
printf '%-34s %12.0f\n' "keyward, usage counting on" "$(awk -v a="$on" 'BEGIN{print a/2}')"
printf '%-34s %12.0f\n' "keyward, usage counting off" "$(awk -v a="$off" 'BEGIN{print a/2}')"
awk -v on="$on" -v off="$off" -v d="$dropped" 'BEGIN{printf "usage counting cost: %.1f%% of throughput (target <= 5%%), raw events dropped: %s\n", (1-on/off)*100, d}'
