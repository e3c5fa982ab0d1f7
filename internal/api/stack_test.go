package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/api"
	"github.com/keyward/keyward/internal/api/spectest"
	"github.com/keyward/keyward/internal/manage"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/sqlite"
	"github.com/keyward/keyward/internal/usage"
	"github.com/keyward/keyward/internal/verify"
)

// serverSecret is the fixed server secret of every test stack.
const serverSecret = "6b657977617264207465737420736572766572207365637265742030313233ab"

// clock is the time source of a stack: the real time plus an offset that a
// test moves forward to expire tokens without sleeping. It never goes
// back, so ids made later still sort later.
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off).UTC()
}

// tick moves the stack's clock on a millisecond. Ids order by the
// millisecond they were made in, then at random: objects made a tick
// apart list in the order they were made.
func (s *stack) tick() { s.clock.Advance(time.Millisecond) }

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

// stack is a whole API over a real SQLite file: store, verification engine,
// management service and HTTP server, with a root token.
type stack struct {
	tb     testing.TB
	clock  *clock
	db     *sqlite.DB
	path   string // the database file
	key    []byte // the audit chain key
	engine *verify.Engine
	svc    *manage.Service
	ws     *keyward.Workspace
	h      http.Handler
	srv    *httptest.Server
	root   string // the root token's secret text
	rootID string
	usage  *usage.Recorder
}

func newStack(tb testing.TB) *stack {
	tb.Helper()
	return newStackWith(tb, nil)
}

// newStackWith is newStack with the engine's configuration changed by
// configure first (nil: none).
func newStackWith(tb testing.TB, configure func(*verify.Config)) *stack {
	tb.Helper()
	ctx := context.Background()
	s := &stack{tb: tb, clock: &clock{}}
	keys, err := secret.NewKeyring(serverSecret)
	if err != nil {
		tb.Fatalf("NewKeyring: %v", err)
	}
	s.key = keys.Current.Derive("audit-chain/v1")
	s.path = filepath.Join(tb.TempDir(), "keyward.db")
	db, err := sqlite.Open(ctx, s.path, sqlite.WithAuditKey(s.key))
	if err != nil {
		tb.Fatalf("sqlite.Open: %v", err)
	}
	tb.Cleanup(func() { db.Close() })
	cfg := verify.Config{Store: db, Keys: keys, Now: s.clock.Now}
	if configure != nil {
		configure(&cfg)
	}
	eng := verify.New(cfg)
	if err := eng.Start(ctx); err != nil {
		tb.Fatalf("engine Start: %v", err)
	}
	tb.Cleanup(func() { eng.Close(context.Background()) })
	svc := &manage.Service{Store: db, Keys: keys, Engine: eng, Now: s.clock.Now}
	ws, err := svc.EnsureDefaultWorkspace(ctx)
	if err != nil {
		tb.Fatalf("EnsureDefaultWorkspace: %v", err)
	}
	rootTok, rootText, err := svc.CreateRootToken(ctx, false)
	if err != nil {
		tb.Fatalf("CreateRootToken: %v", err)
	}
	s.db, s.engine, s.svc, s.ws = db, eng, svc, ws
	s.root, s.rootID = rootText, rootTok.ID
	s.usage = usage.New(usage.Config{Store: db, Now: s.clock.Now})
	s.h = api.New(api.Config{Service: svc, Engine: eng, Store: db, Now: s.clock.Now, Version: "test", Usage: s.usage}).Handler()
	s.srv = httptest.NewServer(s.h)
	tb.Cleanup(s.srv.Close)
	return s
}

// response is one HTTP answer, read in full.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// object decodes the body as a JSON object.
func (r *response) object(tb testing.TB) map[string]any {
	tb.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		tb.Fatalf("body is not a JSON object: %v\n%s", err, r.Body)
	}
	return m
}

// request builds a request to the stack's server. body is nil, a string or
// []byte sent as is, or any other value sent as JSON.
func (s *stack) request(method, path, token string, body any) *http.Request {
	s.tb.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			s.tb.Fatalf("marshal body: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.srv.URL+path, rd)
	if err != nil {
		s.tb.Fatalf("NewRequest: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req
}

// send sends req and reads the whole response.
func (s *stack) send(req *http.Request) *response {
	s.tb.Helper()
	res, err := s.srv.Client().Do(req)
	if err != nil {
		s.tb.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		s.tb.Fatalf("%s %s: reading body: %v", req.Method, req.URL.Path, err)
	}
	if err := spectest.Check(req, res.StatusCode, res.Header, b); err != nil {
		s.tb.Errorf("the response departs from openapi.json: %v", err)
	}
	return &response{Status: res.StatusCode, Header: res.Header, Body: b}
}

// do sends one request; see request for body.
func (s *stack) do(method, path, token string, body any) *response {
	s.tb.Helper()
	return s.send(s.request(method, path, token, body))
}

// form posts a form-encoded body with the given Authorization header value
// ("" for none).
func (s *stack) form(path, authorization string, form url.Values) *response {
	s.tb.Helper()
	req, err := http.NewRequest("POST", s.srv.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		s.tb.Fatalf("NewRequest: %v", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	return s.send(req)
}

// wantStatus fails the test unless r has the given status.
func wantStatus(tb testing.TB, r *response, status int) {
	tb.Helper()
	if r.Status != status {
		tb.Fatalf("status = %d, want %d; body: %s", r.Status, status, r.Body)
	}
}

// wantProblem checks that r is an RFC 9457 problem with the given status
// and code, and returns it decoded.
func wantProblem(tb testing.TB, r *response, status int, code string) map[string]any {
	tb.Helper()
	wantStatus(tb, r, status)
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		tb.Fatalf("Content-Type = %q, want application/problem+json", ct)
	}
	p := r.object(tb)
	if p["code"] != code {
		tb.Fatalf("problem code = %v, want %q; body: %s", p["code"], code, r.Body)
	}
	if p["status"] != float64(status) {
		tb.Fatalf("problem status = %v, want %d", p["status"], status)
	}
	if p["title"] != http.StatusText(status) {
		tb.Fatalf("problem title = %v, want %q", p["title"], http.StatusText(status))
	}
	if p["type"] != "about:blank" {
		tb.Fatalf("problem type = %v, want about:blank", p["type"])
	}
	if rid := r.Header.Get("X-Request-Id"); rid == "" || p["request_id"] != rid {
		tb.Fatalf("problem request_id = %v, want the X-Request-Id %q", p["request_id"], rid)
	}
	return p
}

// pointersOf returns the pointers of a problem's errors[].
func pointersOf(tb testing.TB, p map[string]any) []string {
	tb.Helper()
	errs, ok := p["errors"].([]any)
	if !ok {
		tb.Fatalf("problem has no errors[]: %v", p)
	}
	var out []string
	for _, e := range errs {
		fe, _ := e.(map[string]any)
		ptr, ok := fe["pointer"].(string)
		if !ok {
			tb.Fatalf("errors[] entry without a pointer: %v", e)
		}
		if d, _ := fe["detail"].(string); d == "" {
			tb.Fatalf("errors[] entry %q without a detail", ptr)
		}
		out = append(out, ptr)
	}
	return out
}

// wantInvalid checks that r is a 400 problem whose errors[] names pointer.
func wantInvalid(tb testing.TB, r *response, pointer string) map[string]any {
	tb.Helper()
	p := wantProblem(tb, r, http.StatusBadRequest, "invalid")
	if ps := pointersOf(tb, p); !slices.Contains(ps, pointer) {
		tb.Fatalf("errors[] pointers = %q, want one %q; body: %s", ps, pointer, r.Body)
	}
	return p
}

// create creates a token as root and returns the response object.
func (s *stack) create(body map[string]any) map[string]any {
	s.tb.Helper()
	r := s.do("POST", "/v1/tokens", s.root, body)
	wantStatus(s.tb, r, http.StatusCreated)
	return r.object(s.tb)
}

// newToken creates a token with the given scopes as root and returns its
// id and secret text.
func (s *stack) newToken(name string, scopes ...string) (id, text string) {
	s.tb.Helper()
	if scopes == nil {
		scopes = []string{}
	}
	m := s.create(map[string]any{"name": name, "scopes": scopes})
	return m["id"].(string), m["token"].(string)
}

// get returns a token as root.
func (s *stack) get(id string) map[string]any {
	s.tb.Helper()
	r := s.do("GET", "/v1/tokens/"+id, s.root, nil)
	wantStatus(s.tb, r, http.StatusOK)
	return r.object(s.tb)
}

// verify verifies a token text through the API as root and returns the
// response object.
func (s *stack) verify(text string, scopes ...string) map[string]any {
	s.tb.Helper()
	body := map[string]any{"token": text}
	if scopes != nil {
		body["scopes"] = scopes
	}
	r := s.do("POST", "/v1/verify", s.root, body)
	wantStatus(s.tb, r, http.StatusOK)
	return r.object(s.tb)
}

// wantCode fails unless the verification of text answers code.
func (s *stack) wantCode(text, code string) {
	s.tb.Helper()
	if got := s.verify(text)["code"]; got != code {
		s.tb.Fatalf("verify code = %v, want %s", got, code)
	}
}

// tokenIDs lists the ids of every token of the default workspace.
func (s *stack) tokenIDs() []string {
	s.tb.Helper()
	r := s.do("GET", "/v1/tokens?limit=500", s.root, nil)
	wantStatus(s.tb, r, http.StatusOK)
	var l struct{ Items []struct{ ID string } }
	if err := json.Unmarshal(r.Body, &l); err != nil {
		s.tb.Fatal(err)
	}
	var ids []string
	for _, it := range l.Items {
		ids = append(ids, it.ID)
	}
	return ids
}

// auditEvent is an event as GET /v1/audit answers it.
type auditEvent struct {
	ID        string          `json:"id"`
	Time      time.Time       `json:"time"`
	Action    string          `json:"action"`
	Actor     keyward.Actor   `json:"actor"`
	Target    string          `json:"target"`
	IP        string          `json:"ip"`
	UserAgent string          `json:"user_agent"`
	RequestID string          `json:"request_id"`
	Changes   json.RawMessage `json:"changes"`
}

// audit lists the default workspace's audit events, newest first.
func (s *stack) audit() []auditEvent {
	s.tb.Helper()
	r := s.do("GET", "/v1/audit?limit=500", s.root, nil)
	wantStatus(s.tb, r, http.StatusOK)
	var l struct{ Items []auditEvent }
	if err := json.Unmarshal(r.Body, &l); err != nil {
		s.tb.Fatal(err)
	}
	return l.Items
}

// state is what the store holds, to check that a failed request wrote
// nothing.
type state struct {
	tokens []string
	events []string
}

func (s *stack) state() state {
	s.tb.Helper()
	var st state
	st.tokens = s.tokenIDs()
	for _, e := range s.audit() {
		st.events = append(st.events, e.ID)
	}
	return st
}

// wantUnchanged fails when tokens or audit events were added since before.
func (s *stack) wantUnchanged(before state) {
	s.tb.Helper()
	after := s.state()
	if !slices.Equal(before.tokens, after.tokens) {
		s.tb.Fatalf("tokens changed: before %q, after %q", before.tokens, after.tokens)
	}
	if !slices.Equal(before.events, after.events) {
		s.tb.Fatalf("audit events changed: before %q, after %q", before.events, after.events)
	}
}

// newEvents returns the audit events added since before.
func (s *stack) newEvents(before state) []auditEvent {
	s.tb.Helper()
	var out []auditEvent
	for _, e := range s.audit() {
		if !slices.Contains(before.events, e.ID) {
			out = append(out, e)
		}
	}
	return out
}

// unknownToken returns a well-formed token text that no store holds.
func unknownToken(tb testing.TB) string {
	tb.Helper()
	text, err := secret.Generate("kw")
	if err != nil {
		tb.Fatal(err)
	}
	return text
}
