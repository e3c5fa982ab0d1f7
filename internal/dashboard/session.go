package dashboard

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/account"
	"github.com/keyward/keyward/internal/manage"
	"github.com/keyward/keyward/internal/secret"
)

// Cookie names. With Secure, the __Host- prefix makes browsers refuse the
// cookie unless it is Secure, host-only and for path /, so that no
// subdomain or plain-http page can set or shadow it.
func (s *Server) sessionCookie() string {
	if s.secure {
		return "__Host-keyward_session"
	}
	return "keyward_session"
}

func (s *Server) preCookie() string {
	if s.secure {
		return "__Host-keyward_pre"
	}
	return "keyward_pre"
}

// pendingTimeout ends a session that presented its password but not yet
// its second factor.
const pendingTimeout = 10 * time.Minute

// touchEvery bounds how often a request writes the session's last use: at
// most once a minute, and at least ten times an idle timeout, so that a
// session in use every so often is not taken for idle (the last use
// written lags the true one by up to the interval).
const touchEvery = time.Minute

// touchInterval is how stale the session's recorded last use may get.
func (s *Server) touchInterval() time.Duration { return min(touchEvery, s.idle/10) }

// reauthFor is how long a presented factor counts as recent, for changing
// factors.
const reauthFor = 10 * time.Minute

// state is what a request carries through the dashboard's middleware.
type state struct {
	session  *keyward.Session // nil when not signed in
	user     *keyward.User
	member   *keyward.Member
	settings *keyward.WorkspaceSettings
	factor   bool   // the user has a second factor: TOTP or a passkey
	pre      string // the pre-session cookie's value, for forms without a session
}

type ctxKey struct{}

func stateOf(r *http.Request) *state {
	if st, ok := r.Context().Value(ctxKey{}).(*state); ok {
		return st
	}
	return &state{}
}

// newSessionID returns a random session id (256 bits) for the cookie.
func newSessionID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// digest returns the stored form of a cookie's session id: a keyed
// digest, so that a database dump holds no usable session.
func (s *Server) digest(id string) []byte {
	m := hmac.New(sha256.New, s.sessionKey)
	m.Write([]byte(id))
	return m.Sum(nil)
}

func (s *Server) setCookie(w http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode,
	})
}

// setSession gives the browser the cookie of its session id, of u; a
// session with every factor presented (verified) also earns the browser a
// device cookie (see device.go).
func (s *Server) setSession(w http.ResponseWriter, id string, u *keyward.User, verified bool, now time.Time) {
	s.setCookie(w, s.sessionCookie(), id, 0)
	if verified {
		s.setDevice(w, u, now)
	}
}

// rotatePre gives the browser a new pre-session cookie, at sign-in and
// sign-out, so that a pre-session value (and the passkey ceremonies and
// CSRF tokens bound to it) does not outlive the session it led to.
func (s *Server) rotatePre(w http.ResponseWriter) {
	s.setCookie(w, s.preCookie(), newSessionID(), 0)
}

// loadSession finds the request's session, ends it when it expired, and
// keeps its last use current.
func (s *Server) loadSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := &state{}
		if c, err := r.Cookie(s.preCookie()); err == nil && len(c.Value) == 43 {
			st.pre = c.Value
		}
		if c, err := r.Cookie(s.sessionCookie()); err == nil && c.Value != "" {
			if err := s.resume(r.Context(), st, c.Value); err != nil {
				if keyward.ErrorCode(err) != keyward.ENOTFOUND {
					s.fail(w, r, err)
					return
				}
				s.setCookie(w, s.sessionCookie(), "", -1)
			}
		}
		if st.session == nil && st.pre == "" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			st.pre = newSessionID()
			s.setCookie(w, s.preCookie(), st.pre, 0)
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, st)))
	})
}

// resume fills st from the session whose cookie holds id, or returns
// ENOTFOUND when there is none that is still valid.
func (s *Server) resume(ctx context.Context, st *state, id string) error {
	ses, err := s.accounts.FindSession(ctx, s.digest(id))
	if err != nil {
		return err
	}
	now := s.now().UTC()
	if !s.live(ses, now) {
		if _, err := s.accounts.DeleteSessions(ctx, ses.UserID, ses.ID, ""); err != nil {
			return err
		}
		return keyward.Errorf(keyward.ENOTFOUND, "session expired")
	}
	u, err := s.accounts.FindUser(ctx, ses.UserID)
	if err != nil {
		return err
	}
	m, err := s.accounts.FindMember(ctx, ses.WorkspaceID, u.ID)
	if err != nil {
		return err // removed from the workspace: the session is void
	}
	set, err := s.accounts.FindWorkspaceSettings(ctx, ses.WorkspaceID)
	if err != nil {
		return err
	}
	if now.Sub(ses.LastSeenAt) >= s.touchInterval() {
		// Only the last use: a full write could put back a digest or
		// factor state that another request changed meanwhile.
		if err := s.accounts.TouchSession(ctx, ses.ID, ses.Digest, now); err != nil {
			return err
		}
		ses.LastSeenAt = now
	}
	factor, err := s.hasFactor(ctx, u)
	if err != nil {
		return err
	}
	st.session, st.user, st.member, st.settings, st.factor = ses, u, m, set, factor
	return nil
}

// live reports whether ses can still be used at now: it has not expired,
// and if it still owes its second factor, it is within pendingTimeout of
// the password.
func (s *Server) live(ses *keyward.Session, now time.Time) bool {
	return !ses.Expired(now, s.idle, s.absolute) && (ses.Verified || now.Before(ses.CreatedAt.Add(pendingTimeout)))
}

// sweepTimeout bounds the deletion of a user's dead sessions.
const sweepTimeout = 10 * time.Second

// sweepSessions deletes, after the handler answered, the user's sessions
// that are no longer live at now. Every correct password makes a session,
// finished or not, and a dead one is otherwise deleted only when its
// cookie comes back, which it may never do; sweeping at each sign-in
// bounds a user's rows by its live sessions. A failure is logged, not
// shown. Wait waits for it.
func (s *Server) sweepSessions(r *http.Request, userID string, now time.Time) {
	ctx := context.WithoutCancel(r.Context())
	s.background.Go(func() {
		ctx, cancel := context.WithTimeout(ctx, sweepTimeout)
		defer cancel()
		ss, err := s.accounts.FindSessions(ctx, userID)
		if err != nil {
			s.log.Error("delete dead sessions", "err", err)
			return
		}
		for _, ses := range ss {
			if s.live(ses, now) {
				continue
			}
			if _, err := s.accounts.DeleteSessions(ctx, userID, ses.ID, ""); err != nil {
				s.log.Error("delete dead sessions", "err", err)
				return
			}
		}
	})
}

// requireSession sends a request without a session to the sign-in page,
// and one whose session still owes its second factor to that step (unless
// pending is allowed). While the workspace requires MFA, a user without a
// factor is sent to enrolment before anything else.
func (s *Server) requireSession(next http.HandlerFunc, pending bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		st := stateOf(r)
		switch {
		case st.session == nil:
			q := url.Values{}
			if r.Method == http.MethodGet {
				q.Set("next", secret.Redact(r.URL.Path))
			}
			target := "/signin"
			if len(q) > 0 {
				target += "?" + q.Encode()
			}
			http.Redirect(w, r, target, http.StatusSeeOther)
			return
		case !st.session.Verified && !pending:
			http.Redirect(w, r, "/signin/mfa", http.StatusSeeOther)
			return
		case st.session.Verified && st.settings.MFARequired && !st.factor && !enrolmentPath(r.URL.Path):
			http.Redirect(w, r, "/account/mfa", http.StatusSeeOther)
			return
		}
		next(w, r)
	}
}

// hasFactor reports whether the user has a second factor: TOTP or a
// passkey.
func (s *Server) hasFactor(ctx context.Context, u *keyward.User) (bool, error) {
	if u.HasMFA() {
		return true, nil
	}
	keys, err := s.accounts.FindPasskeys(ctx, u.ID)
	return len(keys) > 0, err
}

// enrolmentPath reports whether a user who must enrol a factor may reach
// path meanwhile.
func enrolmentPath(p string) bool {
	// Switching to another workspace is allowed too: the requirement is
	// this workspace's, and must not hold a member of others in it.
	return strings.HasPrefix(p, "/account/mfa") || strings.HasPrefix(p, "/account/passkeys") || p == "/reauth" || strings.HasPrefix(p, "/signout") || p == "/workspace"
}

// csrfToken returns the token that the request's forms carry: bound to
// the session and the workspace it acts in, or before sign-in to the
// pre-session cookie. A form of a page shown before the session switched
// workspace (in another tab) is refused rather than applied to the
// workspace switched to, which forms do not name.
func (s *Server) csrfToken(st *state) string {
	switch {
	case st.session != nil:
		return s.csrfMAC("session\x00" + st.session.ID + "\x00" + st.session.WorkspaceID)
	case st.pre != "":
		return s.csrfMAC("pre\x00" + st.pre)
	}
	return ""
}

// sessionCSRF is the token of the forms that do not act in a workspace
// (sign-out, the workspace switch): bound to the session alone, so that a
// tab shown before a switch in another can still sign out or switch.
func (s *Server) sessionCSRF(st *state) string {
	if st.session == nil {
		return ""
	}
	return s.csrfMAC("session-only\x00" + st.session.ID)
}

// csrfMAC is a form token: what it is bound to, keyed with the CSRF key.
func (s *Server) csrfMAC(bound string) string {
	m := hmac.New(sha256.New, s.csrfKey)
	m.Write([]byte(bound))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// workspaceFree reports whether the form posted to path acts on no
// workspace, and so takes sessionCSRF's token too.
func workspaceFree(path string) bool {
	return path == "/signout" || path == "/workspace"
}

// maxForm bounds a form body.
const maxForm = 64 << 10

// checkCSRF refuses, with 403, every state-changing request whose form
// lacks the request's CSRF token. A form it cannot read (over maxForm, or
// malformed) has no token it could check, so it gets 403 too: the answer
// to a forged request does not depend on its size.
func (s *Server) checkCSRF(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(w, r)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		if err := r.ParseForm(); err != nil {
			s.renderError(w, r, http.StatusForbidden, "This form could not be read, or did not come from this site. Go back, reload the page and try again.")
			return
		}
		st := stateOf(r)
		want := s.csrfToken(st)
		got := r.PostForm.Get("csrf")
		ok := want != "" && hmac.Equal([]byte(got), []byte(want))
		if !ok && workspaceFree(r.URL.Path) {
			// The header's forms carry the session's token too.
			alt := s.sessionCSRF(st)
			ok = alt != "" && hmac.Equal([]byte(r.PostForm.Get("csrf_session")), []byte(alt))
		}
		if !ok {
			s.renderError(w, r, http.StatusForbidden, "This form has expired or did not come from this site. Go back, reload the page and try again.")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// caller returns the manage.Caller of the signed-in member: owners and
// admins may grant management scopes, members and viewers none.
func (s *Server) caller(r *http.Request) manage.Caller {
	st := stateOf(r)
	c := manage.MemberCaller(st.user.ID, st.member.WorkspaceID)
	if st.member.Role == keyward.RoleOwner || st.member.Role == keyward.RoleAdmin {
		c.Scopes = []string{keyward.ScopeAdmin}
	}
	c.IP, c.UserAgent, c.RequestID = clientIP(r), secret.UserAgent(r.UserAgent()), requestIDOf(r)
	return c
}

// accountEvents returns an audit event of the user's, as event does, for
// every workspace the user is a member of: a change to the account (its
// password, its factors, its sessions everywhere) concerns each of them,
// not only the one the session acts in. The event names no workspace: the
// store writes a copy in each of the user's workspaces in the write's
// transaction, so that one the user has left meanwhile gets none (see
// keyward.AccountStore). changes, when not nil, is the event's changes.
func (s *Server) accountEvents(r *http.Request, userID, action, target string, changes any, now time.Time) ([]*keyward.AuditEvent, error) {
	ev := s.event(r, "", userID, action, target, now)
	if changes != nil {
		raw, err := json.Marshal(changes)
		if err != nil {
			return nil, err
		}
		ev.Changes = raw
	}
	return []*keyward.AuditEvent{ev}, nil
}

// event returns an audit event of the signed-in user (or of actor userID
// when there is no session yet) in workspace wsID.
func (s *Server) event(r *http.Request, wsID, userID, action, target string, now time.Time) *keyward.AuditEvent {
	return &keyward.AuditEvent{
		ID: keyward.NewID(keyward.PrefixEvent, now), WorkspaceID: wsID, Time: now, Action: action,
		Actor:  keyward.Actor{Type: keyward.ActorMember, ID: userID},
		Target: target, IP: clientIP(r), UserAgent: secret.UserAgent(r.UserAgent()), RequestID: requestIDOf(r),
	}
}

// throttle slows down guessing: after a few failures for a key (an
// account or an IP), each further attempt must wait, firstDelay after the
// last free failure and twice as long after each failure since, up to
// maxDelay. It is kept in memory, per node.
//
// An attempt is counted as a failure before it is evaluated (take) and
// refunded only when it succeeds, so that parallel requests cannot all
// pass the check while the first ones are still hashing: the check and
// the reservation are one step under the lock.
type throttle struct {
	mu    sync.Mutex
	m     map[string]*strikes
	swept time.Time
}

type strikes struct {
	n     int
	free  int
	until time.Time
	last  time.Time
	// before is until as it was before the latest take, which a refund
	// puts back: a success must not delay the next attempt as a failure
	// would.
	before time.Time
}

// guard is a key to throttle and the failures it may have before delays
// start.
type guard struct {
	key  string
	free int
}

const (
	firstDelay   = time.Second
	maxDelay     = 15 * time.Minute
	throttleKeep = time.Hour
	throttleMax  = 100_000
	sweepEvery   = time.Minute
)

func newThrottle() *throttle { return &throttle{m: map[string]*strikes{}} }

// take reserves an attempt for every guard at now. When one of the keys
// must still wait it counts nothing and returns the longest wait;
// otherwise it counts a failure for each key and returns 0. The caller
// refunds the keys when the attempt succeeds.
func (t *throttle) take(now time.Time, gs ...guard) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	var d time.Duration
	for _, g := range gs {
		if st := t.m[g.key]; st != nil && now.Before(st.until) {
			d = max(d, st.until.Sub(now))
		}
	}
	if d > 0 {
		return d
	}
	t.sweep(now)
	for _, g := range gs {
		st := t.m[g.key]
		if st == nil || now.Sub(st.last) > throttleKeep {
			st = &strikes{}
			t.m[g.key] = st
		}
		st.n++
		st.free = g.free
		st.last = now
		st.before = st.until
		// The free-th failure already delays the next attempt: after 3
		// failures, the 4th waits.
		if over := st.n - g.free; over >= 0 {
			st.until = now.Add(min(firstDelay<<min(over, 20), maxDelay))
		}
	}
	return 0
}

// refund takes back the failure take counted at at for key, for an
// attempt that succeeded.
func (t *throttle) refund(key string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.m[key]
	if st == nil {
		return
	}
	if st.n--; st.n <= 0 {
		delete(t.m, key)
		return
	}
	// The wait the failures before it set, not the one this attempt's
	// reservation did; but only while no other attempt was taken since,
	// whose failure's wait that would erase: then the longer wait stays.
	if st.last.Equal(at) {
		st.until = st.before
	}
	if st.n < st.free {
		st.until = time.Time{}
	}
}

// reset forgets key's failures.
func (t *throttle) reset(key string) {
	t.mu.Lock()
	delete(t.m, key)
	t.mu.Unlock()
}

// sweep drops, at most once a sweepEvery, the keys whose failures are
// forgotten; at throttleMax keys it also drops those not delayed now,
// so that the map stays bounded by the keys an attacker keeps delayed.
// t.mu is held.
func (t *throttle) sweep(now time.Time) {
	if now.Sub(t.swept) < sweepEvery && len(t.m) < throttleMax {
		return
	}
	t.swept = now
	for k, st := range t.m {
		if now.Sub(st.last) > throttleKeep {
			delete(t.m, k)
		}
	}
	if len(t.m) >= throttleMax {
		for k, st := range t.m {
			if !now.Before(st.until) {
				delete(t.m, k)
			}
		}
	}
}

// addrKey is the throttle's key for the client of r: its IPv4 address, or
// the /64 network of its IPv6 one. A host on IPv6 is handed a /64 (SLAAC,
// privacy addresses) and may use any address in it: counted by address,
// it would begin afresh with each, and the per-address limits would hold
// nobody. An IPv6 address that carries an IPv4 one counts as that IPv4
// address (see embedded4).
func addrKey(r *http.Request) string {
	ip := clientIP(r)
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return "ip:" + ip
	}
	a = embedded4(a.Unmap())
	if a.Is4() {
		return "ip:" + a.String()
	}
	p, _ := a.WithZone("").Prefix(64)
	return "ip:" + p.String()
}

// IPv6 prefixes whose addresses carry an IPv4 address.
var (
	// nat64 is RFC 6052's well-known prefix, under which a translator in
	// front of an IPv6-only server writes every IPv4 client, each in the
	// last 32 bits: they all share one /64.
	nat64 = netip.MustParsePrefix("64:ff9b::/96")
	// sixToFour (RFC 3056) gives each IPv4 address the /48 after 2002:,
	// which holds 65,536 /64s to begin afresh in.
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// embedded4 returns the IPv4 address that a, an IPv6 address written by
// NAT64 or 6to4, stands for, and a as it is otherwise.
func embedded4(a netip.Addr) netip.Addr {
	b := a.As16()
	switch {
	case !a.Is6():
		return a
	case nat64.Contains(a.WithZone("")):
		return netip.AddrFrom4([4]byte(b[12:16]))
	case sixToFour.Contains(a.WithZone("")):
		return netip.AddrFrom4([4]byte(b[2:6]))
	}
	return a
}

// Free failures before delays start: the attempt after the free-th failure
// waits. An account is one person; an IP may be a whole office behind NAT.
const (
	freeAccount = 3
	freeIP      = 10
)

// Passkey sign-ins an address may begin in a window of challengeTTL: each
// stores a challenge, and begins are open to anyone, so an address holds
// at most about twice this many live challenges (two windows' worth).
const beginsPerWindow = 60

// windows counts events per key in fixed windows, for a limit of so many
// in a window that forgets on its own (unlike throttle's strikes, which
// only a success or an hour of quiet clears).
type windows struct {
	mu sync.Mutex
	m  map[string]*window
}

type window struct {
	start time.Time
	n     int
}

func newWindows() *windows { return &windows{m: map[string]*window{}} }

// take counts an event for key at now, unless key has had limit in its
// window of length per already: then it counts nothing and returns the
// wait until the window ends.
func (ws *windows) take(now time.Time, key string, limit int, per time.Duration) time.Duration {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.m[key]
	if w == nil || now.Sub(w.start) >= per {
		if len(ws.m) >= throttleMax { // bounded: drop the ended windows
			for k, o := range ws.m {
				if now.Sub(o.start) >= per {
					delete(ws.m, k)
				}
			}
		}
		w = &window{start: now}
		ws.m[key] = w
	}
	if w.n >= limit {
		return w.start.Add(per).Sub(now)
	}
	w.n++
	return 0
}

// verifyPassword is account.VerifyPassword once a hashing slot is free.
// It returns the context's error when ctx ends first.
func (s *Server) verifyPassword(ctx context.Context, pw, hash string) (bool, error) {
	if err := s.acquireHashing(ctx); err != nil {
		return false, err
	}
	defer func() { <-s.hashing }()
	return account.VerifyPassword(pw, hash)
}

// hashPassword is account.HashPassword with the server's parameters once
// a hashing slot is free. It returns the context's error when ctx ends
// first.
func (s *Server) hashPassword(ctx context.Context, pw string) (string, error) {
	if err := s.acquireHashing(ctx); err != nil {
		return "", err
	}
	defer func() { <-s.hashing }()
	return account.HashPassword(pw, s.params)
}

func (s *Server) acquireHashing(ctx context.Context) error {
	select {
	case s.hashing <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
