package verify_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/manage"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/sqlite"
	"github.com/keyward/keyward/internal/verify"
)

const (
	secretA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	secretB = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is an engine over a real SQLite store, with a management service to
// create tokens through.
type env struct {
	t      testing.TB
	store  *sqlite.DB
	path   string
	keys   *secret.Keyring
	clock  *clock
	engine *verify.Engine
	svc    *manage.Service
	ws     *keyward.Workspace
	caller manage.Caller
	// realTime leaves Config.Now unset, so the engine uses its own clock.
	realTime bool
}

func newEnv(t testing.TB, cfg verify.Config) *env {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keyward.db")
	e := &env{t: t, path: path, clock: &clock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}}
	e.open(cfg, secretA)
	return e
}

// newBenchEnv is an env whose engine runs on its own clock, as in
// production, rather than the tests' settable one.
func newBenchEnv(b *testing.B) *env {
	b.Helper()
	e := &env{t: b, path: filepath.Join(b.TempDir(), "keyward.db"), clock: &clock{}, realTime: true}
	e.open(verify.Config{}, secretA)
	return e
}

// open (re)opens the store and starts a fresh engine on it.
func (e *env) open(cfg verify.Config, current string, previous ...string) {
	e.t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, e.path)
	if err != nil {
		e.t.Fatal(err)
	}
	keys, err := secret.NewKeyring(current, previous...)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg.Store, cfg.Keys = db, keys
	if cfg.Now == nil && !e.realTime {
		cfg.Now = e.clock.Now
	}
	eng := verify.New(cfg)
	if err := eng.Start(ctx); err != nil {
		e.t.Fatal(err)
	}
	e.store, e.keys, e.engine = db, keys, eng
	e.svc = &manage.Service{Store: db, Keys: keys, Engine: eng, Now: e.clock.Now}
	if e.ws, err = e.svc.EnsureDefaultWorkspace(ctx); err != nil {
		e.t.Fatal(err)
	}
	e.caller = manage.SystemCaller(e.ws.ID)
	e.t.Cleanup(func() { e.close() })
}

func (e *env) close() {
	if e.engine != nil {
		e.engine.Close(context.Background())
		e.store.Close()
		e.engine = nil
	}
}

func (e *env) create(t *keyward.Token) (*keyward.Token, string) {
	e.t.Helper()
	if t.Name == "" {
		t.Name = "test"
	}
	tok, text, err := e.svc.CreateToken(context.Background(), e.caller, t)
	if err != nil {
		e.t.Fatalf("CreateToken: %v", err)
	}
	return tok, text
}

func (e *env) verify(text string, ip string, scopes ...string) verify.Result {
	e.t.Helper()
	req := verify.Request{Token: text, Scopes: scopes}
	if ip != "" {
		req.IP = netip.MustParseAddr(ip)
	}
	return e.engine.Verify(context.Background(), req)
}

func expect(t testing.TB, r verify.Result, want keyward.Outcome) {
	t.Helper()
	if r.Outcome != want {
		t.Fatalf("outcome %v, want %v", r.Outcome, want)
	}
}

func TestVerifyOrder(t *testing.T) {
	e := newEnv(t, verify.Config{})
	ctx := context.Background()
	exp := e.clock.Now().Add(time.Hour)
	full := func() *keyward.Token {
		return &keyward.Token{
			Scopes:       []string{"orders:read", "billing:*"},
			ExpiresAt:    &exp,
			AllowedCIDRs: []string{"203.0.113.0/24", "2001:db8::/32"},
			RateLimit:    &keyward.RateLimit{Limit: 1, Window: keyward.Duration(time.Minute)},
			Quota:        &keyward.Quota{Limit: 1, Period: keyward.PeriodDay},
		}
	}
	revoked, revokedText := e.create(full())
	e.svc.RevokeToken(ctx, e.caller, revoked.ID, "test")
	suspended, suspendedText := e.create(full())
	e.svc.SuspendToken(ctx, e.caller, suspended.ID, "")
	_, text := e.create(full())
	_, quotaText := e.create(&keyward.Token{Quota: &keyward.Quota{Limit: 1, Period: keyward.PeriodDay}})
	unknown, _ := secret.Generate("kw")

	t.Run("Malformed", func(t *testing.T) {
		// The last character changed (to "x", or "y" when it was "x": a
		// token that ends in "x" one time in 62 stayed valid).
		last := "x"
		if strings.HasSuffix(text, "x") {
			last = "y"
		}
		expect(t, e.verify(text[:len(text)-1]+last, "203.0.113.9"), keyward.Malformed)
		expect(t, e.verify("", ""), keyward.Malformed)
	})
	t.Run("NotFound", func(t *testing.T) { expect(t, e.verify(unknown, "203.0.113.9"), keyward.NotFound) })
	// Each later failure hides behind the earlier one: a revoked token
	// from a bad IP without scopes is REVOKED.
	t.Run("RevokedBeforeIP", func(t *testing.T) {
		r := e.verify(revokedText, "198.51.100.1", "admin:x")
		expect(t, r, keyward.Revoked)
		if r.Token == nil || r.Token.ID != revoked.ID {
			t.Fatal("a revoked token must be identified")
		}
	})
	t.Run("Suspended", func(t *testing.T) { expect(t, e.verify(suspendedText, "198.51.100.1"), keyward.Suspended) })
	t.Run("IPNotAllowed", func(t *testing.T) {
		expect(t, e.verify(text, "198.51.100.1"), keyward.IPNotAllowed)
		expect(t, e.verify(text, ""), keyward.IPNotAllowed) // no IP: fail closed
		expect(t, e.verify(text, "2001:db9::1"), keyward.IPNotAllowed)
	})
	t.Run("InsufficientScope", func(t *testing.T) {
		r := e.verify(text, "2001:db8::7", "orders:read", "orders:write")
		expect(t, r, keyward.InsufficientScope)
		if r.MissingScope != "orders:write" {
			t.Fatalf("missing scope %q", r.MissingScope)
		}
		expect(t, e.verify(text, "203.0.113.9", "billing"), keyward.InsufficientScope)
	})
	t.Run("ValidWithWildcard", func(t *testing.T) {
		r := e.verify(text, "::ffff:203.0.113.9", "orders:read", "billing:invoices:read")
		expect(t, r, keyward.Valid)
		if !r.Rate.Set || r.Rate.Limit != 1 || r.Rate.Remaining != 0 {
			t.Fatalf("rate %+v", r.Rate)
		}
	})
	t.Run("RateLimited", func(t *testing.T) { expect(t, e.verify(text, "203.0.113.9"), keyward.RateLimited) })
	t.Run("QuotaExceeded", func(t *testing.T) {
		expect(t, e.verify(quotaText, ""), keyward.Valid)
		expect(t, e.verify(quotaText, ""), keyward.QuotaExceeded)
	})
	t.Run("Expired", func(t *testing.T) {
		e.clock.Add(time.Hour)
		expect(t, e.verify(text, "198.51.100.1"), keyward.Expired) // before the IP check
	})
}

func TestOnlyValidConsumes(t *testing.T) {
	e := newEnv(t, verify.Config{})
	_, text := e.create(&keyward.Token{
		Scopes:    []string{"a"},
		RateLimit: &keyward.RateLimit{Limit: 3, Window: keyward.Duration(time.Minute)},
		Quota:     &keyward.Quota{Limit: 5, Period: keyward.PeriodNone},
	})
	for i := 0; i < 10; i++ {
		expect(t, e.verify(text, "", "b"), keyward.InsufficientScope)
	}
	for i := 0; i < 3; i++ {
		expect(t, e.verify(text, "", "a"), keyward.Valid)
	}
	expect(t, e.verify(text, "", "a"), keyward.RateLimited)
	e.clock.Add(time.Minute + 4*time.Second)
	// Rate-limited attempts did not eat the quota: 2 of 5 are left.
	expect(t, e.verify(text, "", "a"), keyward.Valid)
	expect(t, e.verify(text, "", "a"), keyward.Valid)
	r := e.verify(text, "", "a")
	expect(t, r, keyward.QuotaExceeded)
	if r.Quota.Remaining != 0 || r.Rate.Remaining != 1 {
		t.Fatalf("quota %+v rate %+v: a quota-exceeded verification must not take a rate slot", r.Quota, r.Rate)
	}
}

// TestRateLimitUpdateKeepsCount: changing a token's rate limit does not
// hand out a fresh allowance; what was admitted still counts, under the
// new limit and under a new window.
func TestRateLimitUpdateKeepsCount(t *testing.T) {
	e := newEnv(t, verify.Config{})
	tok, text := e.create(&keyward.Token{RateLimit: &keyward.RateLimit{Limit: 2, Window: keyward.Duration(time.Hour)}})
	expect(t, e.verify(text, ""), keyward.Valid)
	expect(t, e.verify(text, ""), keyward.Valid)
	expect(t, e.verify(text, ""), keyward.RateLimited)
	update := func(rl keyward.RateLimit) {
		t.Helper()
		if _, err := e.svc.UpdateToken(context.Background(), e.caller, tok.ID, func(t *keyward.Token) { t.RateLimit = &rl }); err != nil {
			t.Fatal(err)
		}
	}
	// A higher limit in the same window: one more, not three.
	update(keyward.RateLimit{Limit: 3, Window: keyward.Duration(time.Hour)})
	r := e.verify(text, "")
	expect(t, r, keyward.Valid)
	if r.Rate.Remaining != 0 {
		t.Fatalf("remaining %d after the raise, want 0", r.Rate.Remaining)
	}
	expect(t, e.verify(text, ""), keyward.RateLimited)
	// A new window: the three admitted still count in it.
	update(keyward.RateLimit{Limit: 4, Window: keyward.Duration(2 * time.Hour)})
	expect(t, e.verify(text, ""), keyward.Valid)
	expect(t, e.verify(text, ""), keyward.RateLimited)
	// ...and leave it a window later.
	e.clock.Add(2*time.Hour + 7*time.Minute)
	for range 4 {
		expect(t, e.verify(text, ""), keyward.Valid)
	}
	expect(t, e.verify(text, ""), keyward.RateLimited)
}

// TestRateLimitSurvivesRestart: a node that restarts, or drops a token
// from its cache, counts the admissions already made in the window (as
// its last usage flush saw them): no fresh allowance.
func TestRateLimitSurvivesRestart(t *testing.T) {
	e := newEnv(t, verify.Config{})
	tok, text := e.create(&keyward.Token{RateLimit: &keyward.RateLimit{Limit: 3, Window: keyward.Duration(time.Hour)}})
	tokID := tok.ID
	expect(t, e.verify(text, ""), keyward.Valid)
	expect(t, e.verify(text, ""), keyward.Valid)
	e.close() // flushes
	e.clock.Add(10 * time.Minute)
	e.open(verify.Config{}, secretA)
	r := e.verify(text, "")
	expect(t, r, keyward.Valid)
	if r.Rate.Remaining != 0 {
		t.Fatalf("remaining %d after a restart, want 0", r.Rate.Remaining)
	}
	expect(t, e.verify(text, ""), keyward.RateLimited)
	// Out of the cache and back: still counted.
	if err := e.engine.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.close()
	e.open(verify.Config{MaxEntries: 1}, secretA)
	expect(t, e.verify(text, ""), keyward.RateLimited)
	_, other := e.create(&keyward.Token{})
	expect(t, e.verify(other, ""), keyward.Valid) // evicts tok
	expect(t, e.verify(text, ""), keyward.RateLimited)
	// A new node, whose limiter starts from the stored window, still
	// counts them under a new window.
	e.close()
	e.open(verify.Config{}, secretA)
	if _, err := e.svc.UpdateToken(context.Background(), e.caller, tokID, func(t *keyward.Token) {
		t.RateLimit = &keyward.RateLimit{Limit: 4, Window: keyward.Duration(2 * time.Hour)}
	}); err != nil {
		t.Fatal(err)
	}
	expect(t, e.verify(text, ""), keyward.Valid) // 3 counted, 4 allowed
	expect(t, e.verify(text, ""), keyward.RateLimited)
	// The window passes: the allowance is whole again.
	e.clock.Add(2*time.Hour + 7*time.Minute)
	for range 4 {
		expect(t, e.verify(text, ""), keyward.Valid)
	}
}

// TestRateLimitRestartEmptyWindow: a restarted node finds a token's
// window empty once the whole window has passed since its latest
// admission, as a running one does (a burst of N then is admitted in full
// at once, not up to a sub-window later), and its reset, counted from
// that admission, is never more than the window.
func TestRateLimitRestartEmptyWindow(t *testing.T) {
	e := newEnv(t, verify.Config{})
	e.clock.Add(300 * time.Millisecond) // within a sub-window, not at its start
	_, short := e.create(&keyward.Token{RateLimit: &keyward.RateLimit{Limit: 2, Window: keyward.Duration(40 * time.Second)}})
	_, long := e.create(&keyward.Token{RateLimit: &keyward.RateLimit{Limit: 1, Window: keyward.Duration(time.Hour)}})
	expect(t, e.verify(short, ""), keyward.Valid)
	expect(t, e.verify(short, ""), keyward.Valid)
	expect(t, e.verify(short, ""), keyward.RateLimited)
	expect(t, e.verify(long, ""), keyward.Valid)
	e.close() // flushes
	e.clock.Add(10 * time.Second)
	e.open(verify.Config{}, secretA)
	r := e.verify(long, "")
	expect(t, r, keyward.RateLimited)
	if want := time.Hour - 10*time.Second; r.Rate.Reset != want {
		t.Errorf("reset after a restart %v, want %v", r.Rate.Reset, want)
	}
	r = e.verify(short, "")
	expect(t, r, keyward.RateLimited)
	if want := 30 * time.Second; r.Rate.Reset != want {
		t.Errorf("reset after a restart %v, want %v", r.Rate.Reset, want)
	}
	e.close()
	e.clock.Add(30 * time.Second) // a whole window after the latest admission
	e.open(verify.Config{}, secretA)
	expect(t, e.verify(short, ""), keyward.Valid)
	expect(t, e.verify(short, ""), keyward.Valid)
	expect(t, e.verify(short, ""), keyward.RateLimited)
}

// TestRateWindowShortened: a window shortened (1h to 1m) is stored as the
// later state though it ends sooner, so a restart counts the new window's
// admissions.
func TestRateWindowShortened(t *testing.T) {
	e := newEnv(t, verify.Config{})
	tok, text := e.create(&keyward.Token{RateLimit: &keyward.RateLimit{Limit: 10, Window: keyward.Duration(time.Hour)}})
	expect(t, e.verify(text, ""), keyward.Valid)
	e.close()
	e.open(verify.Config{}, secretA)
	if _, err := e.svc.UpdateToken(context.Background(), e.caller, tok.ID, func(t *keyward.Token) {
		t.RateLimit = &keyward.RateLimit{Limit: 10, Window: keyward.Duration(time.Minute)}
	}); err != nil {
		t.Fatal(err)
	}
	for range 9 { // the one admitted before still counts
		expect(t, e.verify(text, ""), keyward.Valid)
	}
	expect(t, e.verify(text, ""), keyward.RateLimited)
	e.close()
	e.open(verify.Config{}, secretA)
	expect(t, e.verify(text, ""), keyward.RateLimited)
}

func TestQuotaPersistsAndRolls(t *testing.T) {
	e := newEnv(t, verify.Config{})
	e.clock.t = time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC)
	_, daily := e.create(&keyward.Token{Quota: &keyward.Quota{Limit: 3, Period: keyward.PeriodDay}})
	_, monthly := e.create(&keyward.Token{Quota: &keyward.Quota{Limit: 4, Period: keyward.PeriodMonth}})
	for i := 0; i < 2; i++ {
		expect(t, e.verify(daily, ""), keyward.Valid)
		expect(t, e.verify(monthly, ""), keyward.Valid)
	}
	// Restart: counts come back from the store.
	e.close()
	e.open(verify.Config{}, secretA)
	expect(t, e.verify(daily, ""), keyward.Valid)
	expect(t, e.verify(daily, ""), keyward.QuotaExceeded)
	// Midnight UTC starts a new day and, here, a new month.
	e.clock.Add(2 * time.Minute)
	for i := 0; i < 3; i++ {
		expect(t, e.verify(daily, ""), keyward.Valid)
	}
	expect(t, e.verify(daily, ""), keyward.QuotaExceeded)
	for i := 0; i < 4; i++ {
		expect(t, e.verify(monthly, ""), keyward.Valid)
	}
	expect(t, e.verify(monthly, ""), keyward.QuotaExceeded)
	// The old period's unflushed use was kept, not lost, when it rolled.
	if err := e.engine.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	tokens, _ := e.store.FindTokens(context.Background(), keyward.TokenFilter{WorkspaceID: e.ws.ID, Limit: 10})
	for _, tok := range tokens {
		if tok.Quota != nil && tok.Quota.Period == keyward.PeriodDay {
			for key, want := range map[string]int64{"2026-11-30": 3, "2026-12-01": 3} {
				if got, _ := e.store.QuotaUsed(context.Background(), tok.ID, key); got != want {
					t.Errorf("day %s: used %d, want %d", key, got, want)
				}
			}
		}
	}
}

func TestRotationGrace(t *testing.T) {
	e := newEnv(t, verify.Config{})
	ctx := context.Background()
	tok, first := e.create(&keyward.Token{})
	_, second, err := e.svc.RotateToken(ctx, e.caller, tok.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, e.verify(first, ""), keyward.Valid)
	expect(t, e.verify(second, ""), keyward.Valid)
	e.clock.Add(30 * time.Minute)
	// A new rotation ends the first secret's grace at once.
	_, third, err := e.svc.RotateToken(ctx, e.caller, tok.ID, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, e.verify(first, ""), keyward.Expired)
	expect(t, e.verify(second, ""), keyward.Valid)
	expect(t, e.verify(third, ""), keyward.Valid)
	e.clock.Add(10 * time.Minute)
	expect(t, e.verify(second, ""), keyward.Expired)
	expect(t, e.verify(third, ""), keyward.Valid)
	// Zero grace: the replaced secret fails at once.
	_, fourth, err := e.svc.RotateToken(ctx, e.caller, tok.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, e.verify(third, ""), keyward.Expired)
	expect(t, e.verify(fourth, ""), keyward.Valid)
}

func TestLookupBudget(t *testing.T) {
	e := newEnv(t, verify.Config{LookupBudget: 5})
	for i := 0; i < 20; i++ {
		unknown, _ := secret.Generate("kw")
		expect(t, e.verify(unknown, ""), keyward.NotFound)
	}
	_, misses, _ := e.engine.CacheStats()
	if misses != 20 {
		t.Fatalf("%d misses", misses)
	}
	// A token written by another process while the budget is spent is not
	// looked up, but the change feed brings it in.
	other := &manage.Service{Store: e.store, Keys: e.keys, Now: e.clock.Now}
	_, text, err := other.CreateToken(context.Background(), e.caller, &keyward.Token{Name: "elsewhere"})
	if err != nil {
		t.Fatal(err)
	}
	expect(t, e.verify(text, ""), keyward.NotFound)
	if err := e.engine.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	expect(t, e.verify(text, ""), keyward.Valid)
	// The budget refills with time.
	e.clock.Add(time.Second)
	_, text2, _ := other.CreateToken(context.Background(), e.caller, &keyward.Token{Name: "elsewhere too"})
	expect(t, e.verify(text2, ""), keyward.Valid)
}

// TestLookupBudgetClockBack: the wall clock steps back an hour. The
// budget neither shrinks by an hour's worth, which would refuse every
// lookup of an unknown token for that hour, nor grows.
func TestLookupBudgetClockBack(t *testing.T) {
	e := newEnv(t, verify.Config{LookupBudget: 2})
	looked := func(want bool) {
		t.Helper()
		unknown, _ := secret.Generate("kw")
		r := e.verify(unknown, "")
		if r.Outcome != keyward.NotFound || r.Err != nil || r.Unlooked == want {
			t.Fatalf("unknown token: %s, Err %v, Unlooked %v; want NOT_FOUND, looked up %v", r.Outcome, r.Err, r.Unlooked, want)
		}
	}
	looked(true)
	e.clock.Add(-time.Hour)
	looked(true)
	looked(false) // the budget of 2 is spent
	e.clock.Add(time.Second)
	looked(true)
}

// TestLookupBudgetKnownSecrets: a node that has not cached a real token
// yet (just restarted) still looks it up while made-up tokens have spent
// the budget, since it read the stored digests at start, also under a
// previous server key; and real tokens do not spend the budget.
func TestLookupBudgetKnownSecrets(t *testing.T) {
	cfg := verify.Config{LookupBudget: 2}
	e := newEnv(t, cfg)
	var texts []string
	for range 4 {
		_, text := e.create(&keyward.Token{})
		texts = append(texts, text)
	}
	e.close()
	e.open(cfg, secretA) // a restart: nothing cached

	for _, text := range texts[:3] {
		expect(t, e.verify(text, ""), keyward.Valid)
	}
	made := func() verify.Result {
		unknown, _ := secret.Generate("kw")
		r := e.verify(unknown, "")
		expect(t, r, keyward.NotFound)
		return r
	}
	if r := made(); r.Unlooked {
		t.Fatal("three real tokens spent the budget of two: a made-up token was not looked up")
	}
	for range 5 {
		made()
	}
	if r := made(); !r.Unlooked {
		t.Fatal("the budget is not spent after seven made-up tokens")
	}
	expect(t, e.verify(texts[3], ""), keyward.Valid)

	// Under a new server key the stored digests are the previous key's.
	e.close()
	e.open(cfg, secretB, secretA)
	for range 5 {
		made()
	}
	expect(t, e.verify(texts[0], ""), keyward.Valid)
}

// countingLookups counts secret lookups: store round trips.
type countingLookups struct {
	keyward.Store
	mu sync.Mutex
	n  int
}

func (c *countingLookups) LookupSecret(ctx context.Context, digest []byte) (*keyward.Secret, *keyward.Token, error) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return c.Store.LookupSecret(ctx, digest)
}

// TestLookupBudgetPreviousKeys: while previous server keys are given, a
// made-up token costs a store lookup under each key (and one more under
// the current key, see lookupOnce); the budget bounds those lookups, not
// the tokens, so that a flood costs the store no more during a rotation.
func TestLookupBudgetPreviousKeys(t *testing.T) {
	e := newEnv(t, verify.Config{})
	_, text := e.create(&keyward.Token{})
	e.close()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, e.path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	keys, err := secret.NewKeyring(secretB, secretA)
	if err != nil {
		t.Fatal(err)
	}
	store := &countingLookups{Store: db}
	eng := verify.New(verify.Config{Store: store, Keys: keys, Now: e.clock.Now, LookupBudget: 6})
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer eng.Close(ctx)
	for range 20 {
		unknown, _ := secret.Generate("kw")
		expect(t, eng.Verify(ctx, verify.Request{Token: unknown}), keyward.NotFound)
	}
	if store.n != 6 {
		t.Fatalf("20 made-up tokens cost %d store lookups, want the budget of 6", store.n)
	}
	// A stored token under the previous key is known: looked up whatever
	// the budget, and moved to the current key.
	expect(t, eng.Verify(ctx, verify.Request{Token: text}), keyward.Valid)
}

// TestLookupUnbudgeted: a request marked Unbudgeted (a revocation by
// secret, for an authenticated caller) looks a token up in the store
// while made-up tokens have spent the budget; an ordinary one does not.
func TestLookupUnbudgeted(t *testing.T) {
	e := newEnv(t, verify.Config{LookupBudget: 2})
	ctx := context.Background()
	other := &manage.Service{Store: e.store, Keys: e.keys, Now: e.clock.Now}
	_, text, err := other.CreateToken(ctx, e.caller, &keyward.Token{Name: "elsewhere"})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		unknown, _ := secret.Generate("kw")
		expect(t, e.verify(unknown, ""), keyward.NotFound)
	}
	expect(t, e.engine.Inspect(ctx, verify.Request{Token: text}), keyward.NotFound)
	res := e.engine.Inspect(ctx, verify.Request{Token: text, Unbudgeted: true})
	expect(t, res, keyward.Valid)
	if res.Token == nil || res.Token.Name != "elsewhere" {
		t.Fatalf("token = %+v", res.Token)
	}
}

// TestSecretEndedWhenSuspended: a secret whose grace is over is reported
// as ended whatever the token's state, so that a retired (perhaps long
// leaked) secret cannot act on the token, e.g. revoke it while suspended.
func TestSecretEndedWhenSuspended(t *testing.T) {
	e := newEnv(t, verify.Config{})
	ctx := context.Background()
	tok, first := e.create(&keyward.Token{})
	if _, _, err := e.svc.RotateToken(ctx, e.caller, tok.ID, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SuspendToken(ctx, e.caller, tok.ID, ""); err != nil {
		t.Fatal(err)
	}
	res := e.engine.Inspect(ctx, verify.Request{Token: first})
	expect(t, res, keyward.Suspended)
	if !res.SecretEnded {
		t.Fatal("SecretEnded is false for a replaced secret of a suspended token")
	}
}

func TestChangeFeedRevocation(t *testing.T) {
	e := newEnv(t, verify.Config{})
	tok, text := e.create(&keyward.Token{})
	expect(t, e.verify(text, ""), keyward.Valid)
	// Revoked by another process: this engine learns it from the feed.
	other := &manage.Service{Store: e.store, Keys: e.keys, Now: e.clock.Now}
	if _, err := other.RevokeToken(context.Background(), e.caller, tok.ID, ""); err != nil {
		t.Fatal(err)
	}
	expect(t, e.verify(text, ""), keyward.Valid) // not yet synced
	if err := e.engine.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	expect(t, e.verify(text, ""), keyward.Revoked)
}

func TestServerKeyRotation(t *testing.T) {
	e := newEnv(t, verify.Config{})
	tok, text := e.create(&keyward.Token{})
	e.close()
	e.open(verify.Config{}, secretB, secretA)
	expect(t, e.verify(text, ""), keyward.Valid)
	// The digest moved to the new key: a store dump under the old key no
	// longer finds it, the new one does.
	newD := e.keys.Current.Digest(text)
	if _, got, err := e.store.LookupSecret(context.Background(), newD[:]); err != nil || got.ID != tok.ID {
		t.Fatalf("lookup under the new key: %v", err)
	}
	old, _ := secret.NewKeyring(secretA)
	oldD := old.Current.Digest(text)
	if _, _, err := e.store.LookupSecret(context.Background(), oldD[:]); keyward.ErrorCode(err) != keyward.ENOTFOUND {
		t.Fatalf("old digest still stored: %v", err)
	}
	// Without the previous key, it still verifies: it was moved.
	e.close()
	e.open(verify.Config{}, secretB)
	expect(t, e.verify(text, ""), keyward.Valid)
}

// movingStore moves a secret from its previous key's digest to the
// current key's just before the engine's lookup under the previous key
// reads, as a concurrent verification on this or another node does.
type movingStore struct {
	keyward.Store
	from, to []byte
	moved    bool
}

func (s *movingStore) LookupSecret(ctx context.Context, digest []byte) (*keyward.Secret, *keyward.Token, error) {
	if !s.moved && string(digest) == string(s.from) {
		s.moved = true
		sec, _, err := s.Store.LookupSecret(ctx, s.from)
		if err != nil {
			return nil, nil, err
		}
		moved := *sec
		moved.Digest = s.to
		if err := s.Store.Redigest(ctx, s.from, &moved); err != nil {
			return nil, nil, err
		}
	}
	return s.Store.LookupSecret(ctx, digest)
}

// A secret moved to the current key between the engine's lookups under the
// current and the previous key is found where it went: a valid token never
// answers NOT_FOUND during a server key rotation.
func TestServerKeyRotationRace(t *testing.T) {
	e := newEnv(t, verify.Config{})
	tok, text := e.create(&keyward.Token{})
	e.close()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, e.path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	keys, err := secret.NewKeyring(secretB, secretA)
	if err != nil {
		t.Fatal(err)
	}
	oldD, newD := keys.Previous[0].Digest(text), keys.Current.Digest(text)
	store := &movingStore{Store: db, from: oldD[:], to: newD[:]}
	eng := verify.New(verify.Config{Store: store, Keys: keys})
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer eng.Close(ctx)
	r := eng.Verify(ctx, verify.Request{Token: text, WorkspaceID: tok.WorkspaceID})
	if !store.moved {
		t.Fatal("the store never saw a lookup under the previous key")
	}
	expect(t, r, keyward.Valid)
}

func TestWorkspaceIsolation(t *testing.T) {
	e := newEnv(t, verify.Config{})
	_, text := e.create(&keyward.Token{})
	r := e.engine.Verify(context.Background(), verify.Request{Token: text, WorkspaceID: "ws_other"})
	expect(t, r, keyward.NotFound)
	if r.Token != nil {
		t.Fatal("a token of another workspace must not be described")
	}
	r = e.engine.Verify(context.Background(), verify.Request{Token: text, WorkspaceID: e.ws.ID})
	expect(t, r, keyward.Valid)
}

func TestUsageFlush(t *testing.T) {
	e := newEnv(t, verify.Config{})
	tok, text := e.create(&keyward.Token{})
	expect(t, e.verify(text, "203.0.113.5"), keyward.Valid)
	if err := e.engine.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := e.store.FindToken(context.Background(), e.ws.ID, tok.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.LastUsedAt == nil || !got.LastUsedAt.Equal(e.clock.Now()) || got.LastUsedIP != "203.0.113.5" {
		t.Fatalf("last use %v %q", got.LastUsedAt, got.LastUsedIP)
	}
}

func TestVerifyAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool allocate; run without -race")
	}
	e := newEnv(t, verify.Config{})
	_, text := e.create(benchToken())
	req := verify.Request{Token: text, Scopes: []string{"orders:read"}, IP: netip.MustParseAddr("203.0.113.9")}
	ctx := context.Background()
	expect(t, e.engine.Verify(ctx, req), keyward.Valid)
	if n := testing.AllocsPerRun(1000, func() { e.engine.Verify(ctx, req) }); n != 0 {
		t.Fatalf("cached Verify allocates %v times", n)
	}
}

func benchToken() *keyward.Token {
	return &keyward.Token{
		Name:         "bench",
		Scopes:       []string{"orders:read", "orders:write", "billing:*"},
		AllowedCIDRs: []string{"198.51.100.0/24", "203.0.113.0/24"},
		RateLimit:    &keyward.RateLimit{Limit: 1 << 40, Window: keyward.Duration(time.Minute)},
	}
}

// BenchmarkHMAC is the baseline of BenchmarkVerify: one HMAC-SHA-256 of
// the same token under the same key.
func BenchmarkHMAC(b *testing.B) {
	e := newBenchEnv(b)
	_, text := e.create(benchToken())
	b.ReportAllocs()
	for b.Loop() {
		e.keys.Current.Digest(text)
	}
}

// BenchmarkVerify verifies a cached valid token with scopes, a CIDR
// allowlist and a rate limit.
func BenchmarkVerify(b *testing.B) {
	e := newBenchEnv(b)
	_, text := e.create(benchToken())
	req := verify.Request{Token: text, Scopes: []string{"orders:read"}, IP: netip.MustParseAddr("203.0.113.9")}
	ctx := context.Background()
	expect(b, e.engine.Verify(ctx, req), keyward.Valid)
	b.ReportAllocs()
	for b.Loop() {
		if r := e.engine.Verify(ctx, req); r.Outcome != keyward.Valid {
			b.Fatal(r.Outcome)
		}
	}
}

// BenchmarkVerifyParallel is BenchmarkVerify from all cores on one token,
// the worst case for the token's lock.
func BenchmarkVerifyParallel(b *testing.B) {
	e := newBenchEnv(b)
	_, text := e.create(benchToken())
	req := verify.Request{Token: text, Scopes: []string{"orders:read"}, IP: netip.MustParseAddr("203.0.113.9")}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			e.engine.Verify(ctx, req)
		}
	})
}

// BenchmarkCacheMemory loads tokens into the cache and reports the heap
// each one costs (a token with two scopes, a CIDR and a rate limit).
func BenchmarkCacheMemory(b *testing.B) {
	const n = 5000
	e := newEnv(b, verify.Config{})
	ctx := context.Background()
	ids := make([]string, 0, n)
	texts := make([]string, 0, n)
	for i := 0; i < n; i++ {
		tok, text := e.create(benchToken())
		ids, texts = append(ids, tok.ID), append(texts, text)
	}
	// A fresh engine, so that only the cache fills below is counted.
	e.close()
	e.open(verify.Config{LookupBudget: 1 << 30}, secretA)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for b.Loop() {
		for _, text := range texts {
			e.engine.Verify(ctx, verify.Request{Token: text, IP: netip.MustParseAddr("203.0.113.1"), Scopes: []string{"orders:read"}})
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if _, _, size := e.engine.CacheStats(); size != n {
		b.Fatalf("%d cached, want %d", size, n)
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/token")
	runtime.KeepAlive(ids)
}

// countingStore counts usage writes.
type countingStore struct {
	keyward.Store
	mu      sync.Mutex
	flushes int
	entries int
}

func (c *countingStore) FlushUsage(ctx context.Context, id keyward.FlushID, batch []keyward.UsageFlush) error {
	c.mu.Lock()
	c.flushes++
	c.entries += len(batch)
	c.mu.Unlock()
	return c.Store.FlushUsage(ctx, id, batch)
}

// TestUsageWritesBatched: 10,000 verifications of one token between two
// flushes cause one write of one entry, carrying the whole quota use.
func TestUsageWritesBatched(t *testing.T) {
	e := newEnv(t, verify.Config{})
	tok, text := e.create(&keyward.Token{Quota: &keyward.Quota{Limit: 1 << 40, Period: keyward.PeriodNone}})
	e.close()
	db, err := sqlite.Open(context.Background(), e.path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cs := &countingStore{Store: db}
	eng := verify.New(verify.Config{Store: cs, Keys: e.keys, Now: e.clock.Now, FlushInterval: time.Hour})
	if err := eng.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10000; i++ {
		expect(t, eng.Verify(context.Background(), verify.Request{Token: text}), keyward.Valid)
	}
	if err := eng.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if cs.flushes != 1 || cs.entries != 1 {
		t.Fatalf("%d flushes of %d entries for 10,000 verifications, want 1 of 1", cs.flushes, cs.entries)
	}
	if used, _ := db.QuotaUsed(context.Background(), tok.ID, "total"); used != 10000 {
		t.Fatalf("quota used %d, want 10000", used)
	}
}

func TestStatsEvictions(t *testing.T) {
	e := newEnv(t, verify.Config{MaxEntries: 2})
	for i := 0; i < 3; i++ {
		e.create(&keyward.Token{})
	}
	if _, _, size := e.engine.CacheStats(); size != 2 {
		t.Fatalf("%d cached with MaxEntries 2", size)
	}
	if got := e.engine.Stats().Evictions; got != 1 {
		t.Fatalf("%d evictions, want 1", got)
	}
}

// stallingStore holds the first TokenByID after stall is armed: it reads,
// tells read, and returns what it read only once release is closed.
type stallingStore struct {
	keyward.Store
	armed   sync.Once
	stall   chan struct{} // closed to arm
	read    chan struct{}
	release chan struct{}
}

func (s *stallingStore) TokenByID(ctx context.Context, id string) (*keyward.Token, error) {
	tok, err := s.Store.TokenByID(ctx, id)
	select {
	case <-s.stall:
		hold := false
		s.armed.Do(func() { hold = true })
		if hold {
			close(s.read)
			<-s.release
		}
	default:
	}
	return tok, err
}

// TestRefreshesOrdered: a refresh that read a token before a write (the
// change feed's, say) must not install that older state over the refresh
// made after the write. It did: a resumed token stayed SUSPENDED.
func TestRefreshesOrdered(t *testing.T) {
	e := newEnv(t, verify.Config{})
	tok, text := e.create(&keyward.Token{})
	ctx := context.Background()
	if _, err := e.svc.SuspendToken(ctx, e.caller, tok.ID, "looking"); err != nil {
		t.Fatal(err)
	}
	expect(t, e.verify(text, ""), keyward.Suspended)

	st := &stallingStore{Store: e.store, stall: make(chan struct{}), read: make(chan struct{}), release: make(chan struct{})}
	eng := verify.New(verify.Config{Store: st, Keys: e.keys, Now: e.clock.Now})
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer eng.Close(ctx)
	expect(t, eng.Verify(ctx, verify.Request{Token: text}), keyward.Suspended)

	close(st.stall)
	stale := make(chan error, 1)
	go func() { stale <- eng.Refresh(ctx, tok.ID) }() // reads "suspended", then stalls
	<-st.read
	svc := &manage.Service{Store: e.store, Keys: e.keys, Engine: eng, Now: e.clock.Now}
	resumed := make(chan error, 1)
	go func() { _, err := svc.ResumeToken(ctx, e.caller, tok.ID, ""); resumed <- err }()
	// Let the resume's refresh run, or queue behind the stalled one, then
	// let the stalled refresh install what it read.
	select {
	case err := <-resumed:
		resumed <- err
	case <-time.After(100 * time.Millisecond):
	}
	close(st.release)
	if err := <-stale; err != nil {
		t.Fatal(err)
	}
	if err := <-resumed; err != nil {
		t.Fatal(err)
	}
	expect(t, eng.Verify(ctx, verify.Request{Token: text}), keyward.Valid)
}

// TestChangeFeedPruned: a node that did not read the feed for half its
// retention may have missed changes that were pruned since; once it reads
// the feed again it trusts no cached token.
func TestChangeFeedPruned(t *testing.T) {
	e := newEnv(t, verify.Config{PollInterval: time.Hour, ChangeRetention: time.Hour})
	ctx := context.Background()
	tok, text := e.create(&keyward.Token{})
	_, kept := e.create(&keyward.Token{})
	expect(t, e.verify(text, ""), keyward.Valid)
	expect(t, e.verify(kept, ""), keyward.Valid)
	other := &manage.Service{Store: e.store, Keys: e.keys, Now: e.clock.Now}
	if _, err := other.RevokeToken(ctx, e.caller, tok.ID, ""); err != nil {
		t.Fatal(err)
	}
	// Two hours pass unread; the revocation's change is pruned meanwhile.
	e.clock.Add(2 * time.Hour)
	if err := e.store.PruneChanges(ctx, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	expect(t, e.verify(text, ""), keyward.Valid) // not yet synced
	if err := e.engine.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	expect(t, e.verify(text, ""), keyward.Revoked)
	expect(t, e.verify(kept, ""), keyward.Valid)

	// Read within half the retention, the cache is kept.
	_, misses, _ := e.engine.CacheStats()
	e.clock.Add(29 * time.Minute)
	if err := e.engine.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	expect(t, e.verify(kept, ""), keyward.Valid)
	if _, m, _ := e.engine.CacheStats(); m != misses {
		t.Fatalf("%d cache misses after a sync within half the retention, want %d", m, misses)
	}
}

// TestChangeFeedPruning: the engine deletes changes older than the
// retention by itself.
func TestChangeFeedPruning(t *testing.T) {
	e := newEnv(t, verify.Config{ChangeRetention: 100 * time.Millisecond})
	e.create(&keyward.Token{})
	if cs, err := e.store.Changes(context.Background(), 0, 10); err != nil || len(cs) == 0 {
		t.Fatalf("changes = %v, %v; want the creation's", cs, err)
	}
	e.clock.Add(time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		cs, err := e.store.Changes(context.Background(), 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d changes older than the retention still kept after 5 s", len(cs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hangingLookups is a store whose secret lookups hang until their context
// ends (a store that accepts connections and never answers).
type hangingLookups struct{ keyward.Store }

func (h hangingLookups) LookupSecret(ctx context.Context, digest []byte) (*keyward.Secret, *keyward.Token, error) {
	select {
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	case <-time.After(10 * time.Second):
		return nil, nil, errors.New("the lookup waited 10 s: no timeout of its own")
	}
}

// TestLookupTimeout: a lookup of a token the cache does not hold gives up
// after LookupTimeout when the store hangs, and the verification fails
// with Result.Err.
func TestLookupTimeout(t *testing.T) {
	e := newEnv(t, verify.Config{})
	_, text := e.create(&keyward.Token{})
	eng := verify.New(verify.Config{Store: hangingLookups{e.store}, Keys: e.keys, Now: e.clock.Now, LookupTimeout: 50 * time.Millisecond})
	r := eng.Verify(context.Background(), verify.Request{Token: text})
	if !errors.Is(r.Err, context.DeadlineExceeded) {
		t.Fatalf("Err = %v, want the lookup's deadline", r.Err)
	}
}

// TestChangeFeedGapKeepsQuota: forgetting the cache after a long gap
// writes the usage not yet flushed first, so that a token read again
// starts from a quota count that holds it.
func TestChangeFeedGapKeepsQuota(t *testing.T) {
	e := newEnv(t, verify.Config{PollInterval: time.Hour, FlushInterval: time.Hour, ChangeRetention: time.Hour})
	_, text := e.create(&keyward.Token{Quota: &keyward.Quota{Limit: 5, Period: keyward.PeriodNone}})
	for i := 0; i < 3; i++ {
		expect(t, e.verify(text, ""), keyward.Valid)
	}
	e.clock.Add(2 * time.Hour)
	if err := e.engine.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	valid := 0
	for i := 0; i < 10; i++ {
		if e.verify(text, "").Outcome == keyward.Valid {
			valid++
		}
	}
	if valid != 2 {
		t.Fatalf("%d more verifications VALID after the gap, want 2 (quota 5, 3 used)", valid)
	}
}

// TestForgetRace: a sync that forgets the cache, racing refreshes and
// verifications, never leaves a token without its entry (a nil entry in
// the cache panicked) nor answers NOT_FOUND for a valid one.
func TestForgetRace(t *testing.T) {
	e := newEnv(t, verify.Config{PollInterval: time.Hour, ChangeRetention: 2 * time.Nanosecond, LookupBudget: 1 << 30})
	tok, text := e.create(&keyward.Token{})
	ctx := context.Background()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			e.clock.Add(time.Microsecond) // every sync is past half the retention
			if err := e.engine.Sync(ctx); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; i < 200; i++ {
		if err := e.engine.Refresh(ctx, tok.ID); err != nil {
			t.Fatal(err)
		}
		if r := e.verify(text, ""); r.Outcome != keyward.Valid {
			t.Fatalf("verification %d: %v (%v), want VALID", i, r.Outcome, r.Err)
		}
	}
	<-done
}

// TestTighter: the RateLimit fields show the limit with fewer remaining,
// and of two with none (or as many) left, the one that frees later.
func TestTighter(t *testing.T) {
	rate := verify.Limit{Set: true, Limit: 1, Reset: 6 * time.Second, Window: 5 * time.Second}
	day := verify.Limit{Set: true, Limit: 1, Reset: time.Hour, Window: 24 * time.Hour}
	for _, c := range []struct {
		name string
		r    verify.Result
		want verify.Limit
		ok   bool
	}{
		{"none", verify.Result{}, verify.Limit{}, false},
		{"rate only", verify.Result{Rate: rate}, rate, true},
		{"quota only", verify.Result{Quota: day}, day, true},
		{"both used up: the later", verify.Result{Rate: rate, Quota: day}, day, true},
		{"fewer remaining", verify.Result{Rate: verify.Limit{Set: true, Limit: 10, Remaining: 3, Window: time.Minute}, Quota: verify.Limit{Set: true, Limit: 100, Remaining: 50, Window: 24 * time.Hour}}, verify.Limit{Set: true, Limit: 10, Remaining: 3, Window: time.Minute}, true},
	} {
		if got, ok := c.r.Tighter(); got != c.want || ok != c.ok {
			t.Errorf("%s: Tighter() = %+v, %v; want %+v, %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

// Seconds rounds up, so that a client waiting that long finds the slot
// free, and RetryAfter never answers less than a second.
func TestSeconds(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want int64
	}{
		{-time.Second, 0}, {0, 0}, {time.Nanosecond, 1}, {time.Second, 1},
		{time.Second + time.Millisecond, 2}, {90 * time.Second, 90}, {24 * time.Hour, 86400},
	} {
		if got := verify.Seconds(c.d); got != c.want {
			t.Errorf("Seconds(%v) = %d, want %d", c.d, got, c.want)
		}
	}
	for _, c := range []struct {
		name string
		r    verify.Result
		want int64
	}{
		{"rate, slot frees in 1.2s", verify.Result{Outcome: keyward.RateLimited, Rate: verify.Limit{Set: true, Reset: 1200 * time.Millisecond, Window: time.Minute}}, 2},
		{"rate, slot frees now", verify.Result{Outcome: keyward.RateLimited, Rate: verify.Limit{Set: true, Window: time.Minute}}, 1},
		{"day quota", verify.Result{Outcome: keyward.QuotaExceeded, Rate: verify.Limit{Set: true, Reset: time.Second, Window: time.Minute}, Quota: verify.Limit{Set: true, Reset: time.Hour, Window: 24 * time.Hour}}, 3600},
		{"total quota", verify.Result{Outcome: keyward.QuotaExceeded, Quota: verify.Limit{Set: true}}, 86400},
		{"rate, quota left", verify.Result{Outcome: keyward.RateLimited, Rate: verify.Limit{Set: true, Reset: 6 * time.Second, Window: 5 * time.Second}, Quota: verify.Limit{Set: true, Remaining: 1, Reset: time.Hour, Window: 24 * time.Hour}}, 6},
		{"rate, day quota used up too", verify.Result{Outcome: keyward.RateLimited, Rate: verify.Limit{Set: true, Reset: 6 * time.Second, Window: 5 * time.Second}, Quota: verify.Limit{Set: true, Reset: time.Hour, Window: 24 * time.Hour}}, 3600},
		{"rate, total quota used up too", verify.Result{Outcome: keyward.RateLimited, Rate: verify.Limit{Set: true, Reset: 6 * time.Second, Window: 5 * time.Second}, Quota: verify.Limit{Set: true, Limit: 1}}, 86400},
	} {
		if got := c.r.RetryAfter(); got != c.want {
			t.Errorf("%s: RetryAfter() = %d, want %d", c.name, got, c.want)
		}
	}
}

// failover is a store that an operator can swap for another under a
// running engine, as a restore from a backup or the promotion of a
// replica does. The methods an engine calls after its start go to the
// current one.
type failover struct {
	keyward.Store // the first, for the rest
	mu            sync.Mutex
	cur           keyward.Store
}

func (f *failover) store() keyward.Store { f.mu.Lock(); defer f.mu.Unlock(); return f.cur }
func (f *failover) swap(s keyward.Store) { f.mu.Lock(); f.cur = s; f.mu.Unlock() }

func (f *failover) Changes(ctx context.Context, after int64, limit int) ([]keyward.Change, error) {
	return f.store().Changes(ctx, after, limit)
}
func (f *failover) LastChange(ctx context.Context) (int64, error) { return f.store().LastChange(ctx) }
func (f *failover) TokenByID(ctx context.Context, id string) (*keyward.Token, error) {
	return f.store().TokenByID(ctx, id)
}
func (f *failover) TokenSecrets(ctx context.Context, id string) ([]*keyward.Secret, error) {
	return f.store().TokenSecrets(ctx, id)
}
func (f *failover) LookupSecret(ctx context.Context, d []byte) (*keyward.Secret, *keyward.Token, error) {
	return f.store().LookupSecret(ctx, d)
}
func (f *failover) FlushUsage(ctx context.Context, id keyward.FlushID, b []keyward.UsageFlush) error {
	return f.store().FlushUsage(ctx, id, b)
}
func (f *failover) QuotaUsed(ctx context.Context, id, period string) (int64, error) {
	return f.store().QuotaUsed(ctx, id, period)
}

// TestChangeFeedRewound: the store comes back from a backup taken before
// the latest changes (or a replica is promoted without them), under a
// running engine. Its feed numbers the next changes from before those the
// engine read: a revocation made there is still seen, and a token made
// since the backup, which the store no longer holds, stops verifying.
func TestChangeFeedRewound(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path, backup := filepath.Join(dir, "keyward.db"), filepath.Join(dir, "backup.db")
	keys, err := secret.NewKeyring(secretA)
	if err != nil {
		t.Fatal(err)
	}
	now := (&clock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}).Now
	db, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	svc := &manage.Service{Store: db, Keys: keys, Now: now}
	ws, err := svc.EnsureDefaultWorkspace(ctx)
	if err != nil {
		t.Fatal(err)
	}
	caller := manage.SystemCaller(ws.ID)
	old, oldText, err := svc.CreateToken(ctx, caller, &keyward.Token{Name: "before the backup"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sqlite.Backup(ctx, path, backup); err != nil {
		t.Fatal(err)
	}

	store := &failover{Store: db, cur: db}
	eng := verify.New(verify.Config{Store: store, Keys: keys, Now: now, PollInterval: time.Hour})
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer eng.Close(ctx)
	svc.Engine = eng
	_, newText, err := svc.CreateToken(ctx, caller, &keyward.Token{Name: "after the backup"})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 { // the feed moves on past what the backup holds
		if _, _, err := svc.CreateToken(ctx, caller, &keyward.Token{Name: "more after the backup"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := eng.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{oldText, newText} {
		expect(t, eng.Verify(ctx, verify.Request{Token: text}), keyward.Valid)
	}

	restored, err := sqlite.Open(ctx, backup)
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	store.swap(restored)
	// Another node revokes the token on the restored store.
	other := &manage.Service{Store: restored, Keys: keys, Now: now}
	if _, err := other.RevokeToken(ctx, caller, old.ID, ""); err != nil {
		t.Fatal(err)
	}
	if err := eng.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	expect(t, eng.Verify(ctx, verify.Request{Token: oldText}), keyward.Revoked)
	expect(t, eng.Verify(ctx, verify.Request{Token: newText}), keyward.NotFound)
}

// downFlushes is a store whose usage writes fail while down is set, as
// while PostgreSQL is unreachable.
type downFlushes struct {
	keyward.Store
	down atomic.Bool
}

func (d *downFlushes) FlushUsage(ctx context.Context, id keyward.FlushID, b []keyward.UsageFlush) error {
	if d.down.Load() {
		return keyward.Errorf(keyward.EUNAVAILABLE, "the token store is unavailable")
	}
	return d.Store.FlushUsage(ctx, id, b)
}

// lockedBuffer is a bytes.Buffer that a logger and a test may use at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// TestFlushFailuresLogged: while the store refuses usage writes, the
// flush, tried every FlushInterval, logs its failure once, then once a
// minute with how many tries failed, and once when it succeeds again,
// rather than a line at every try.
func TestFlushFailuresLogged(t *testing.T) {
	e := newEnv(t, verify.Config{})
	_, text := e.create(&keyward.Token{Quota: &keyward.Quota{Limit: 100, Period: keyward.PeriodNone}})
	store := &downFlushes{Store: e.store}
	var log lockedBuffer
	eng := verify.New(verify.Config{Store: store, Keys: e.keys, Now: e.clock.Now, FlushInterval: 5 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(&log, nil))})
	if err := eng.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer eng.Close(context.Background())
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10 s; log:\n%s", what, log.String())
			}
		}
	}
	lines := func() int { return strings.Count(log.String(), "usage flush failed") }

	store.down.Store(true)
	expect(t, eng.Verify(context.Background(), verify.Request{Token: text}), keyward.Valid)
	waitFor("5 failed flushes", func() bool { return eng.Stats().FlushErrors >= 5 })
	if n := lines(); n != 1 {
		t.Fatalf("%d lines for 5 failed flushes, want 1:\n%s", n, log.String())
	}
	e.clock.Add(time.Minute)
	before := eng.Stats().FlushErrors
	waitFor("2 more failed flushes", func() bool { return eng.Stats().FlushErrors >= before+2 })
	if n := lines(); n != 2 || !strings.Contains(log.String(), "failures=") {
		t.Fatalf("%d lines after a minute of failures, want 2, the second with their count:\n%s", n, log.String())
	}
	store.down.Store(false)
	waitFor("the recovery logged", func() bool { return strings.Contains(log.String(), "usage flushed again") })
}

// downLookups is a store whose secret lookups fail while down is set.
type downLookups struct {
	keyward.Store
	down  atomic.Bool
	calls atomic.Uint64 // lookups that failed
}

func (d *downLookups) LookupSecret(ctx context.Context, digest []byte) (*keyward.Secret, *keyward.Token, error) {
	if d.down.Load() {
		d.calls.Add(1)
		return nil, nil, keyward.Errorf(keyward.EUNAVAILABLE, "the token store is unavailable")
	}
	return d.Store.LookupSecret(ctx, digest)
}

// TestLookupFailuresLogged: while the store is down, every verification of
// a token the cache does not hold fails its lookup. The failures are
// logged as a run (the first, then once a minute with their count, then
// the recovery), not one line each: at a few hundred requests a second,
// an outage would otherwise bury the log in one repeated line.
func TestLookupFailuresLogged(t *testing.T) {
	e := newEnv(t, verify.Config{})
	_, text := e.create(&keyward.Token{})
	store := &downLookups{Store: e.store}
	var log lockedBuffer
	eng := verify.New(verify.Config{Store: store, Keys: e.keys, Now: e.clock.Now, Log: slog.New(slog.NewTextHandler(&log, nil))})
	ctx := context.Background()
	const failed = "token lookup failed"
	lines := func() int { return strings.Count(log.String(), failed) }

	store.down.Store(true)
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if r := eng.Verify(ctx, verify.Request{Token: text}); r.Outcome != keyward.NotFound || r.Err == nil {
				t.Errorf("store down: outcome %v, err %v; want NOT_FOUND with the store's error", r.Outcome, r.Err)
			}
		})
	}
	wg.Wait()
	if n := lines(); n != 1 || !strings.Contains(log.String(), "level=ERROR") {
		t.Fatalf("%d lines for 50 failed lookups, want 1 at ERROR:\n%s", n, log.String())
	}

	// StoreErrors counts the lookups that asked the store and failed: at
	// least LookupTrip, and not the ones skipped once lookups paused
	// (how many of the 50 asked depends on how they interleaved). A
	// caller that gave up tells nothing of the store.
	asked := store.calls.Load()
	if asked < verify.LookupTrip || asked > 50 {
		t.Fatalf("the store was asked %d times for 50 lookups, want %d to 50", asked, verify.LookupTrip)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	eng.Verify(gone, verify.Request{Token: text})
	if n := eng.Stats().StoreErrors; n != asked {
		t.Fatalf("StoreErrors = %d after %d failed lookups and one its caller gave up on, want %d", n, asked, asked)
	}

	e.clock.Add(time.Minute)
	eng.Verify(ctx, verify.Request{Token: text})
	if n := lines(); n != 2 || !strings.Contains(log.String(), "failures=51") {
		t.Fatalf("%d lines after a minute of failures, want 2, the second with failures=51:\n%s", n, log.String())
	}

	// Lookups failed LookupTrip times in a row: the next asks the store
	// LookupRetry after the last that did.
	store.down.Store(false)
	e.clock.Add(verify.LookupRetry)
	expect(t, eng.Verify(ctx, verify.Request{Token: text}), keyward.Valid)
	if !strings.Contains(log.String(), `level=INFO msg="token lookups succeed again" failures=51 after=1m0.5s`) {
		t.Fatalf("no recovery line:\n%s", log.String())
	}
	before := log.String()
	expect(t, eng.Verify(ctx, verify.Request{Token: text}), keyward.Valid)
	if log.String() != before {
		t.Fatalf("a lookup after the recovery logged:\n%s", strings.TrimPrefix(log.String(), before))
	}
}

// TestChangeFeedRewoundSameToken: the store comes back from a backup under
// a running engine whose last change read was a write of one token, and
// the restored store's next writes are a revocation of another token, then
// a write of that same token again, numbered as the changes the engine
// read. The change at the engine's position then names the token it read
// there, but it is another write (made at another time): the revocation
// numbered before it is still seen.
func TestChangeFeedRewoundSameToken(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path, backup := filepath.Join(dir, "keyward.db"), filepath.Join(dir, "backup.db")
	keys, err := secret.NewKeyring(secretA)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	db, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	svc := &manage.Service{Store: db, Keys: keys, Now: clk.Now}
	ws, err := svc.EnsureDefaultWorkspace(ctx)
	if err != nil {
		t.Fatal(err)
	}
	caller := manage.SystemCaller(ws.ID)
	busy, _, err := svc.CreateToken(ctx, caller, &keyward.Token{Name: "written often"})
	if err != nil {
		t.Fatal(err)
	}
	other, otherText, err := svc.CreateToken(ctx, caller, &keyward.Token{Name: "revoked after the restore"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sqlite.Backup(ctx, path, backup); err != nil {
		t.Fatal(err)
	}

	store := &failover{Store: db, cur: db}
	eng := verify.New(verify.Config{Store: store, Keys: keys, Now: clk.Now, PollInterval: time.Hour})
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer eng.Close(ctx)
	svc.Engine = eng
	rename := func(s *manage.Service, name string) {
		t.Helper()
		clk.Add(time.Second)
		if _, err := s.UpdateToken(ctx, caller, busy.ID, func(t *keyward.Token) { t.Name = name }); err != nil {
			t.Fatal(err)
		}
	}
	rename(svc, "written often 1")
	rename(svc, "written often 2") // the engine's last change read
	if err := eng.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	expect(t, eng.Verify(ctx, verify.Request{Token: otherText}), keyward.Valid)

	restored, err := sqlite.Open(ctx, backup)
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	store.swap(restored)
	// Another node revokes the other token on the restored store, then
	// writes the busy one: the same token at the same number as the
	// change the engine read last.
	again := &manage.Service{Store: restored, Keys: keys, Now: clk.Now}
	clk.Add(time.Second)
	if _, err := again.RevokeToken(ctx, caller, other.ID, ""); err != nil {
		t.Fatal(err)
	}
	rename(again, "written often again")
	if err := eng.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	expect(t, eng.Verify(ctx, verify.Request{Token: otherText}), keyward.Revoked)
}

// TestChangeFeedQuietForRetention: no token is written for the feed's
// whole retention, so the last change a node read is pruned for its age
// although the node read the feed all along. The node reads every token
// again, as it cannot tell, but does not blame a restore or a failover
// that did not happen: in a deployment whose tokens rarely change, that
// would be a warning every retention.
func TestChangeFeedQuietForRetention(t *testing.T) {
	var log lockedBuffer
	e := newEnv(t, verify.Config{PollInterval: time.Hour, ChangeRetention: time.Hour, Log: slog.New(slog.NewTextHandler(&log, nil))})
	ctx := context.Background()
	_, text := e.create(&keyward.Token{})
	for range 3 { // read every 25 minutes, within half the retention
		if err := e.engine.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		e.clock.Add(25 * time.Minute)
	}
	if err := e.store.PruneChanges(ctx, e.clock.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if cs, err := e.store.Changes(ctx, 0, 0); err != nil || len(cs) != 0 {
		t.Fatalf("changes after the prune: %v, %v; want none", cs, err)
	}
	if err := e.engine.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	got := log.String()
	if !strings.Contains(got, "the change feed no longer holds the last change read, nor any before it") || strings.Contains(got, "failed over") {
		t.Errorf("log after the quiet retention:\n%s", got)
	}
	expect(t, e.verify(text, ""), keyward.Valid)
}
