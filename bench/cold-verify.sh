#!/usr/bin/env bash
# Cold verification (a cache miss, answered by the store) with N tokens
# stored, on SQLite and, when KEYWARD_TEST_POSTGRES_URL is set, on
# PostgreSQL, in the schema keyward_bench_cold (created if missing, through
# the URL's search_path). Target (PRODUCT §8): p99 ≤ 2 ms with 1,000,000
# tokens on both. Prints each store's seeding rate, cold and warm latency,
# then both side by side. See bench/coldverify for what is measured.
#
# The stores are kept between runs (SQLite in $KEYWARD_COLD_DIR, default
# /tmp/keyward-cold-sqlite; PostgreSQL in its schema), with a sample of
# plaintext benchmark tokens next to them, so that only the first run
# seeds. FRESH=1 deletes both first, to measure seeding again.
#
# Usage: [FRESH=1] bash bench/cold-verify.sh [N] [SAMPLE]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
SAMPLE=${2:-20000}
DIR=${KEYWARD_COLD_DIR:-/tmp/keyward-cold-sqlite}
PG_SAMPLE=${KEYWARD_COLD_PG_SAMPLE:-/tmp/keyward-cold-postgres/sample.txt}
SCHEMA=keyward_bench_cold
LIMIT=${KEYWARD_COLD_TIMEOUT:-7200} # seconds per store, seeding included

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/coldverify" ./bench/coldverify

# bench runs the command, stopping it after LIMIT seconds whatever happens.
bench() { timeout --foreground -k 10 "$LIMIT" "$work/coldverify" -n "$N" -sample "$SAMPLE" "$@"; }

[ "${FRESH:-0}" = 1 ] && rm -rf "$DIR"
echo "== SQLite: $N tokens in $DIR"
bench -data-dir "$DIR" | tee "$work/sqlite.out"

if [ -n "${KEYWARD_TEST_POSTGRES_URL:-}" ]; then
	command -v psql >/dev/null || { echo "psql is needed to create the schema $SCHEMA" >&2; exit 1; }
	if [ "${FRESH:-0}" = 1 ]; then
		PGOPTIONS="-c client_min_messages=warning" psql "$KEYWARD_TEST_POSTGRES_URL" -qX -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE"
		rm -f "$PG_SAMPLE"
	fi
	PGOPTIONS="-c client_min_messages=warning" psql "$KEYWARD_TEST_POSTGRES_URL" -qX -c "CREATE SCHEMA IF NOT EXISTS $SCHEMA"
	sep='?'
	[[ $KEYWARD_TEST_POSTGRES_URL == *\?* ]] && sep='&'
	echo
	echo "== PostgreSQL: $N tokens in schema $SCHEMA"
	bench -database-url "$KEYWARD_TEST_POSTGRES_URL${sep}search_path=$SCHEMA" -sample-file "$PG_SAMPLE" | tee "$work/postgres.out"
else
	echo
	echo "== PostgreSQL: skipped (KEYWARD_TEST_POSTGRES_URL is not set)"
fi

# field prints the value of key=value in a RESULT line.
field() { sed -n "s/^RESULT .*[ ]$1=\([^ ]*\).*/\1/p" "$2"; }
seeding() { sed -n 's/^RESULT .*seed="\([^"]*\)".*/\1/p' "$1"; }
echo
echo "cold verify (cache miss), $SAMPLE tokens each, one at a time; target p99 <= 2 ms"
printf '%-9s %8s %10s %10s %10s %12s %11s %11s  %s\n' store tokens "p50 ms" "p99 ms" "max ms" "verify/s" "warm p50 µs" "warm p99 µs" seeding
for s in sqlite postgres; do
	f="$work/$s.out"
	[ -f "$f" ] || continue
	printf '%-9s %8s %10s %10s %10s %12s %11s %11s  %s\n' "$s" "$(field tokens "$f")" "$(field cold_p50_ms "$f")" \
		"$(field cold_p99_ms "$f")" "$(field cold_max_ms "$f")" "$(field cold_per_s "$f")" \
		"$(field warm_p50_us "$f")" "$(field warm_p99_us "$f")" "$(seeding "$f")"
done
