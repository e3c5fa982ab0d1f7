package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

// parallel posts the form (with the browser's CSRF token) n times at once
// and counts the answers by status. It does not touch b.last.
func (b *browser) parallel(path string, form url.Values, n int) map[int]int {
	b.e.t.Helper()
	form.Set("csrf", b.csrf)
	body := form.Encode()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		start  = make(chan struct{})
		counts = map[int]int{}
	)
	for range n {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", b.e.srv.URL+path, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			<-start
			res, err := b.c.Do(req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				counts[-1]++
				return
			}
			res.Body.Close()
			counts[res.StatusCode]++
		})
	}
	close(start)
	wg.Wait()
	return counts
}

// TestThrottleParallel sends many guesses at once: the throttle counts
// each before it is evaluated, so no more are evaluated than sequential
// guesses would be.
func TestThrottleParallel(t *testing.T) {
	const n = 40
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	t.Run("SignIn", func(t *testing.T) {
		b := e.browser()
		b.get("/signin")
		counts := b.parallel("/signin", url.Values{"email": {"ann@example.com"}, "password": {"wrong password here"}}, n)
		if counts[http.StatusUnauthorized] > freeAccount || counts[http.StatusUnauthorized]+counts[http.StatusTooManyRequests] != n {
			t.Errorf("answers %v: want at most %d guesses evaluated (401), the rest 429", counts, freeAccount)
		}
	})
	t.Run("MFA", func(t *testing.T) {
		e.clock.Add(2 * throttleKeep)
		b := e.browser()
		b.signIn("ann@example.com")
		enrolTOTP(t, b)
		b.post("/signout", nil)
		b.signIn2("ann@example.com")
		if b.path() != "/signin/mfa" {
			t.Fatalf("at %s, want /signin/mfa", b.path())
		}
		counts := b.parallel("/signin/mfa", url.Values{"code": {"000000"}}, n)
		if counts[http.StatusUnauthorized] > freeAccount || counts[http.StatusUnauthorized]+counts[http.StatusTooManyRequests] != n {
			t.Errorf("answers %v: want at most %d codes evaluated (401), the rest 429", counts, freeAccount)
		}
	})
}

func TestThrottleTake(t *testing.T) {
	now := time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)
	t.Run("RefundOnSuccess", func(t *testing.T) {
		th := newThrottle()
		for range freeIP {
			if d := th.take(now, guard{"ip:x", freeIP}); d != 0 {
				t.Fatalf("take = %s within the free failures", d)
			}
			th.refund("ip:x", now)
		}
		if len(th.m) != 0 {
			t.Errorf("successes left %d keys", len(th.m))
		}
	})
	t.Run("ErrDelayAfterFree", func(t *testing.T) {
		th := newThrottle()
		for i := range freeAccount {
			if d := th.take(now, guard{"account:a", freeAccount}); d != 0 {
				t.Fatalf("take after %d failures = %s, want 0", i, d)
			}
		}
		if d := th.take(now, guard{"account:a", freeAccount}); d != firstDelay {
			t.Errorf("take after %d failures = %s, want %s", freeAccount, d, firstDelay)
		}
		if d := th.take(now.Add(firstDelay), guard{"account:a", freeAccount}); d != 0 {
			t.Fatalf("take once the delay passed = %s, want 0", d)
		}
		if d := th.take(now.Add(firstDelay), guard{"account:a", freeAccount}); d != 2*firstDelay {
			t.Errorf("take after %d failures = %s, want %s", freeAccount+1, d, 2*firstDelay)
		}
	})
	t.Run("OKRefundOfLastFree", func(t *testing.T) {
		th := newThrottle()
		for range freeAccount {
			th.take(now, guard{"account:a", freeAccount})
		}
		th.refund("account:a", now) // the free-th attempt succeeded
		if d := th.take(now, guard{"account:a", freeAccount}); d != 0 {
			t.Errorf("take after %d failures = %s, want 0", freeAccount-1, d)
		}
	})
	t.Run("ErrRefundAfterFree", func(t *testing.T) {
		th := newThrottle()
		for range freeIP {
			th.take(now, guard{"ip:x", freeIP})
		}
		later := now.Add(firstDelay)
		th.take(later, guard{"ip:x", freeIP})
		th.refund("ip:x", later) // someone behind the IP signed in: its failures stay
		// The success delays no one: the next attempt waits only what
		// the failures set, which has passed.
		if d := th.take(later, guard{"ip:x", freeIP}); d != 0 {
			t.Errorf("take after a success = %s, want 0: a success counted as a failure", d)
		}
		// That attempt failed: the failures before the success count, so
		// it is the second over the free ones, and the next waits twice.
		if d := th.take(later, guard{"ip:x", freeIP}); d != 2*firstDelay {
			t.Errorf("take after %d failures, a success and a failure = %s, want %s", freeIP, d, 2*firstDelay)
		}
	})
	t.Run("EvictExpired", func(t *testing.T) {
		th := newThrottle()
		for i := range 1000 {
			th.take(now, guard{fmt.Sprint("ip:", i), freeIP})
		}
		th.take(now.Add(throttleKeep+time.Minute), guard{"ip:new", freeIP})
		if len(th.m) != 1 {
			t.Errorf("%d keys kept, want only the new one", len(th.m))
		}
	})
	t.Run("CapKeepsDelayedKeys", func(t *testing.T) {
		th := newThrottle()
		for range freeAccount {
			th.take(now, guard{"account:victim", freeAccount})
		}
		for i := range throttleMax {
			th.take(now, guard{fmt.Sprint("ip:", i), freeIP})
		}
		if len(th.m) > throttleMax {
			t.Errorf("%d keys, want at most %d", len(th.m), throttleMax)
		}
		if d := th.take(now, guard{"account:victim", freeAccount}); d == 0 {
			t.Error("a flood of keys erased a delayed key")
		}
	})
}

// TestHashingBounded fills every hashing slot: a password check then
// waits for one, or gives up when its request ends.
func TestHashingBounded(t *testing.T) {
	e := newEnv(t)
	s := e.dash
	if got, want := cap(s.hashing), 2*runtime.GOMAXPROCS(0); got != want {
		t.Fatalf("%d hashing slots, want %d", got, want)
	}
	hash, err := s.hashPassword(context.Background(), goodPassword)
	if err != nil {
		t.Fatal(err)
	}
	for range cap(s.hashing) {
		s.hashing <- struct{}{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.verifyPassword(ctx, goodPassword, hash); !errors.Is(err, context.Canceled) {
		t.Fatalf("verifyPassword with every slot taken and the request gone = %v, want context.Canceled", err)
	}
	done := make(chan bool)
	go func() {
		ok, _ := s.verifyPassword(context.Background(), goodPassword, hash)
		done <- ok
	}()
	select {
	case <-done:
		t.Fatal("a password was hashed while every slot was taken")
	default:
	}
	<-s.hashing
	if !<-done {
		t.Error("the password did not verify once a slot was free")
	}
}

// gatedAudit holds AppendAudit until the test opens the gate, and notes
// whether the client had its answer by then.
type gatedAudit struct {
	keyward.Store
	gate      chan struct{}
	answered  *atomic.Bool
	beforeAns atomic.Int32 // AppendAudit calls made before the answer
}

func (g *gatedAudit) AppendAudit(ctx context.Context, events ...*keyward.AuditEvent) error {
	select {
	case <-g.gate:
	case <-time.After(5 * time.Second): // only breaks the deadlock of a synchronous write
	}
	if !g.answered.Load() {
		g.beforeAns.Add(1)
	}
	return g.Store.AppendAudit(ctx, events...)
}

// TestSignInFailureAuditAfterAnswer: a known email's failed sign-in
// answers before its audit record is written, as an unknown email's does
// (which has none), so the timing does not tell them apart.
func TestSignInFailureAuditAfterAnswer(t *testing.T) {
	var answered atomic.Bool
	g := &gatedAudit{gate: make(chan struct{}), answered: &answered}
	e := newEnvWith(t, "", func(s keyward.Store) keyward.Store { g.Store = s; return g })
	e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.get("/signin")
	status, body := b.post("/signin", url.Values{"email": {"ann@example.com"}, "password": {"wrong password here"}})
	answered.Store(true)
	close(g.gate)
	wantStatus(t, status, http.StatusUnauthorized, body)
	e.dash.Wait()
	if n := g.beforeAns.Load(); n != 0 {
		t.Errorf("%d audit writes happened before the answer", n)
	}
	evs, _ := e.store.FindAuditEvents(context.Background(), keyward.AuditFilter{WorkspaceID: e.ws.ID})
	var failed *keyward.AuditEvent
	for _, ev := range evs {
		if ev.Action == "session.signin_failed" {
			failed = ev
		}
	}
	if failed == nil || failed.IP == "" || !strings.Contains(string(failed.Changes), `"factor":"password"`) {
		t.Errorf("session.signin_failed event = %+v, want one with the IP and factor", failed)
	}
}

// TestThrottleRefundKeepsLaterFailure: a success whose check outlasted
// its reservation, refunded after another attempt failed meanwhile, does
// not erase the wait that failure earned.
func TestThrottleRefundKeepsLaterFailure(t *testing.T) {
	th := newThrottle()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for range freeIP {
		th.take(now, guard{"ip:x", freeIP})
	}
	t0 := now.Add(10 * time.Second)
	if d := th.take(t0, guard{"ip:x", freeIP}); d != 0 { // the success, still hashing
		t.Fatalf("refused %s", d)
	}
	t1 := t0.Add(2500 * time.Millisecond)
	if d := th.take(t1, guard{"ip:x", freeIP}); d != 0 { // a wrong guess meanwhile
		t.Fatalf("refused %s", d)
	}
	th.refund("ip:x", t0)
	if d := th.take(t1.Add(200*time.Millisecond), guard{"ip:x", freeIP}); d == 0 {
		t.Error("the next guess passed at once: the success erased the wait of the failure after it")
	}
}

// TestSignInLongEmail: an email longer than any account's is refused as
// such before the throttle or a hash: the throttle would keep a key the
// size of the form for an hour, one for each attempt from addresses an
// attacker can rotate.
func TestSignInLongEmail(t *testing.T) {
	e := newEnv(t)
	e.user("ann@example.com", keyward.RoleOwner)
	b := e.browser()
	b.get("/signin")
	long := strings.Repeat("a", keyward.MaxEmailLen-len("@example.com")+1) + "@example.com"
	for i := range freeAccount + 1 {
		status, body := b.post("/signin", url.Values{"email": {long}, "password": {"wrong password here"}})
		if status != http.StatusBadRequest {
			t.Fatalf("attempt %d: status %d, want 400\n%s", i+1, status, body)
		}
		wantText(t, body, "An email address has at most 254 characters.")
	}
	e.dash.throttle.mu.Lock()
	n := len(e.dash.throttle.m)
	e.dash.throttle.mu.Unlock()
	if n != 0 {
		t.Errorf("the throttle keeps %d keys, want none", n)
	}
	b.signIn("ann@example.com")
}

// TestThrottlePerIPv6Network: failures from the addresses of one IPv6
// /64, which one host may use at will, count together; another /64's do
// not.
func TestThrottlePerIPv6Network(t *testing.T) {
	e := newEnv(t)
	h := e.dash.Handler()
	// The test server's clients all come from 127.0.0.1: requests go
	// straight to the handler, from the address they name.
	get := httptest.NewRequest("GET", "/signin", nil)
	get.RemoteAddr = "[2001:db8:0:1::1]:4000"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, get)
	m := csrfRE.FindStringSubmatch(rec.Body.String())
	cookies := rec.Result().Cookies()
	if m == nil || len(cookies) == 0 {
		t.Fatalf("sign-in page without a form token or cookie:\n%s", rec.Body)
	}
	signIn := func(addr, email string) int {
		t.Helper()
		form := url.Values{"csrf": {m[1]}, "email": {email}, "password": {"wrong password here"}}
		req := httptest.NewRequest("POST", "/signin", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr = addr
		for _, c := range cookies {
			req.AddCookie(c)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	for i := range freeIP {
		if status := signIn(fmt.Sprintf("[2001:db8:0:1::%x]:4000", i+1), fmt.Sprintf("user%d@example.com", i)); status != http.StatusUnauthorized {
			t.Fatalf("failure %d: status %d, want 401", i+1, status)
		}
	}
	if status := signIn("[2001:db8:0:1:ffff:ffff:ffff:ffff]:4000", "fresh@example.com"); status != http.StatusTooManyRequests {
		t.Errorf("another address of the same /64: status %d, want 429", status)
	}
	if status := signIn("[2001:db8:0:2::1]:4000", "fresh@example.com"); status != http.StatusUnauthorized {
		t.Errorf("an address of another /64: status %d, want 401", status)
	}
}

func TestAddrKey(t *testing.T) {
	tests := []struct{ remote, want string }{
		{"192.0.2.1:4000", "ip:192.0.2.1"},
		{"[::ffff:192.0.2.1]:4000", "ip:192.0.2.1"},
		{"[2001:db8:1:2:3:4:5:6]:4000", "ip:2001:db8:1:2::/64"},
		{"[2001:db8:1:2::]:4000", "ip:2001:db8:1:2::/64"},
		{"[fe80::1%eth0]:4000", "ip:fe80::/64"},
		{"[::1]:4000", "ip:::/64"},
		// A translator's IPv4 clients are as many hosts, not one /64.
		{"[64:ff9b::c000:201]:4000", "ip:192.0.2.1"},
		{"[64:ff9b::c633:6401]:4000", "ip:198.51.100.1"},
		// One IPv4 host's 6to4 /48 is one host, not 65,536 /64s.
		{"[2002:c000:201:1::1]:4000", "ip:192.0.2.1"},
		{"[2002:c000:201:ffff::1]:4000", "ip:192.0.2.1"},
		{"not an address", "ip:not an address"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tt.remote
		if got := addrKey(r); got != tt.want {
			t.Errorf("addrKey(%q) = %q, want %q", tt.remote, got, tt.want)
		}
	}
}
