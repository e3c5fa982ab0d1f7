#!/bin/bash
# make.sh OLD_KEYWARD_BINARY OUT_DIR PORT
#
# Makes the upgrade fixture that e2e's TestUpgradeFromFixture reads: a
# SQLite store written by an earlier keyward (built from an earlier
# commit, e.g. git worktree add /tmp/kw-old COMMIT && go build -o
# /tmp/kw-old-bin ./cmd/keyward in it), with tokens of every state, a
# second workspace, usage, an audit chain and dashboard users (one with
# TOTP), and fixture.json, which says what each token must verify as.
# Needs curl, jq, python3 (for the TOTP code) and sqlite3. The store is
# checkpointed, vacuumed and gzipped; the secrets in it are test data.
set -euo pipefail
BIN=$1 OUT=$2 PORT=$3
D=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$D"' EXIT
U=http://127.0.0.1:$PORT
ROOT=$("$BIN" init --data-dir "$D" --output json | jq -r .token)
echo 'correct horse battery staple 1' | "$BIN" user create --data-dir "$D" --email owner@example.com --owner --password-stdin >/dev/null
echo 'correct horse battery staple 2' | "$BIN" user create --data-dir "$D" --email member@example.com --password-stdin >/dev/null
"$BIN" serve --addr 127.0.0.1:$PORT --data-dir "$D" --flush-interval 50ms --usage-flush-interval 100ms --usage-sample 1 >"$D/serve.log" 2>&1 &
PID=$!
for i in $(seq 100); do curl -sf -o /dev/null $U/healthz && break; sleep 0.1; done
api() { curl -sf -X "$1" -H "Authorization: Bearer $TOK" -H 'Content-Type: application/json' ${3:+-d "$3"} "$U$2"; }
TOK=$ROOT
mk() { api POST /v1/tokens "$1"; }
J='[]'
add() { # name secret code [ip]
	J=$(jq -c --arg n "$1" --arg s "$2" --arg c "$3" --arg ip "${4-}" '. + [{name: $n, secret: $s, code: $c} + (if $ip != "" then {ip: $ip} else {} end)]' <<<"$J")
}
A=$(mk '{"name":"active","scopes":["orders:read"],"rate_limit":{"limit":100,"window":"1m"},"quota":{"limit":1000,"period":"month"},"metadata":{"team":"billing"},"subject":"cust-1"}')
add active "$(jq -r .token <<<"$A")" VALID
G=$(mk '{"name":"grace","scopes":["orders:*"]}')
GN=$(api POST "/v1/tokens/$(jq -r .id <<<"$G")/rotate" '{"grace_period":"720h"}')
add grace-old "$(jq -r .token <<<"$G")" VALID # EXPIRED once the 720h grace is over
add grace-new "$(jq -r .token <<<"$GN")" VALID
N=$(mk '{"name":"nograce","scopes":["orders:read"]}')
NN=$(api POST "/v1/tokens/$(jq -r .id <<<"$N")/rotate" '{"grace_period":"0s"}')
add nograce-old "$(jq -r .token <<<"$N")" EXPIRED
add nograce-new "$(jq -r .token <<<"$NN")" VALID
R=$(mk '{"name":"revoked","scopes":["orders:read"]}')
api POST "/v1/tokens/$(jq -r .id <<<"$R")/revoke" '{"reason":"leaked"}' >/dev/null
add revoked "$(jq -r .token <<<"$R")" REVOKED
S=$(mk '{"name":"suspended","scopes":["orders:read"]}')
api POST "/v1/tokens/$(jq -r .id <<<"$S")/suspend" '{"reason":"review"}' >/dev/null
add suspended "$(jq -r .token <<<"$S")" SUSPENDED
E=$(mk '{"name":"expired","scopes":["orders:read"],"expires_in":"1s"}')
add expired "$(jq -r .token <<<"$E")" EXPIRED
I=$(mk '{"name":"ip","scopes":["orders:read"],"allowed_cidrs":["10.0.0.0/8"]}')
add ip-inside "$(jq -r .token <<<"$I")" VALID 10.1.2.3
add ip-outside "$(jq -r .token <<<"$I")" IP_NOT_ALLOWED 192.0.2.1
W=$(mk '{"name":"wrongscope","scopes":["billing:read"]}')
add wrongscope "$(jq -r .token <<<"$W")" INSUFFICIENT_SCOPE
Q=$(mk '{"name":"quota","scopes":["orders:read"],"quota":{"limit":2,"period":"none"}}')
add quota "$(jq -r .token <<<"$Q")" QUOTA_EXCEEDED
M=$(mk '{"name":"mgmt-read","scopes":["keyward:tokens:read"]}')
add mgmt "$(jq -r .token <<<"$M")" INSUFFICIENT_SCOPE
V=$(mk '{"name":"verifier","scopes":["keyward:verify"]}')
WS=$(api POST /v1/workspaces '{"name":"acme"}')
X=$(TOK=$(jq -r .token <<<"$WS") mk '{"name":"acme-token","scopes":["orders:read"]}')
add other-workspace "$(jq -r .token <<<"$X")" NOT_FOUND
sleep 1.5
TOK=$(jq -r .token <<<"$V")
for round in 1 2 3; do
	jq -c '.[]' <<<"$J" | while read -r t; do
		api POST /v1/verify "$(jq -c '{token: .secret, scopes: ["orders:read"]} + (if .ip then {ip: .ip} else {} end)' <<<"$t")" >/dev/null
	done
done
# What the old release answers, which must be what the fixture says.
J=$(jq -c '.[]' <<<"$J" | while read -r t; do
	c=$(api POST /v1/verify "$(jq -c '{token: .secret, scopes: ["orders:read"]} + (if .ip then {ip: .ip} else {} end)' <<<"$t")" | jq -r .code)
	jq -c --arg c "$c" '. + {old_code: $c}' <<<"$t"
done | jq -sc .)
jq -e 'all(.[]; .code == .old_code)' <<<"$J" >/dev/null || { echo "the old release answered otherwise: $J" >&2; exit 1; }
# The owner turns on TOTP in the dashboard.
TOTP=$(python3 - "$PORT" <<'PY'
import sys, re, hmac, hashlib, struct, time, base64, urllib.request, urllib.parse, urllib.error
base = "http://127.0.0.1:" + sys.argv[1]; jar = {}
class NoRedir(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k): return None
op = urllib.request.build_opener(NoRedir)
def req(path, form=None):
    r = urllib.request.Request(base + path, data=urllib.parse.urlencode(form).encode() if form else None)
    if jar: r.add_header("Cookie", "; ".join(k + "=" + v for k, v in jar.items()))
    try: resp = op.open(r)
    except urllib.error.HTTPError as e: resp = e
    for h in resp.headers.get_all("Set-Cookie") or []:
        k, v = h.split(";")[0].split("=", 1); jar[k] = v
    return resp.status, resp.read().decode()
csrf = lambda b: re.search(r'name="csrf" value="([^"]+)"', b).group(1)
def code(text):
    s = text.replace(" ", ""); key = base64.b32decode(s + "=" * (-len(s) % 8))
    h = hmac.new(key, struct.pack(">Q", int(time.time() // 30)), hashlib.sha1).digest(); o = h[-1] & 15
    return "%06d" % ((struct.unpack(">I", h[o:o+4])[0] & 0x7fffffff) % 1000000)
_, b = req("/signin"); st, _ = req("/signin", {"csrf": csrf(b), "email": "owner@example.com", "password": "correct horse battery staple 1"})
assert st == 303, st
_, b = req("/account/mfa"); _, b = req("/account/mfa/totp", {"csrf": csrf(b)})
sec = re.search(r'id="totp-secret">([^<]+)<', b).group(1)
st, b2 = req("/account/mfa/totp/confirm", {"csrf": csrf(b), "pending": re.search(r'name="pending" value="([^"]+)"', b).group(1), "code": code(sec)})
assert st == 200 and "recovery" in b2.lower(), st
print(sec)
PY
)
sleep 1
TOK=$ROOT
USAGE=$(api GET "/v1/tokens/$(jq -r .id <<<"$A")/usage?granularity=day&from=$(date -u +%Y-%m-%dT00:00:00Z)" | jq -c '{token_id, total, by_outcome}')
AUDIT=$(api GET '/v1/audit?limit=500' | jq '.items | length')
kill -TERM $PID; while kill -0 $PID 2>/dev/null; do sleep 0.1; done
sqlite3 "$D/keyward.db" 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null
sqlite3 "$D/keyward.db" 'VACUUM;'
mkdir -p "$OUT"
gzip -9 -n -c "$D/keyward.db" >"$OUT/keyward.db.gz"
jq -n --arg made_by "$("$BIN" version)" --arg day "$(date -u +%Y-%m-%d)" --arg secret "$(cat "$D/server.secret")" \
	--arg root "$ROOT" --arg verifier "$(jq -r .token <<<"$V")" --argjson tokens "$J" --argjson usage "$USAGE" \
	--argjson audit "$AUDIT" --arg totp "$TOTP" '{made_by: $made_by, day: $day, server_secret: $secret, root: $root,
	verifier: $verifier, tokens: $tokens, usage: $usage, audit_events_default: $audit,
	users: [{email: "owner@example.com", password: "correct horse battery staple 1", totp_secret: $totp},
		{email: "member@example.com", password: "correct horse battery staple 2"}]}' >"$OUT/fixture.json"
