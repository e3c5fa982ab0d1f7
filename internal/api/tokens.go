package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/manage"
)

// tokenView is a token as the API shows it.
type tokenView struct {
	ID            string             `json:"id"`
	Name          string             `json:"name"`
	Hint          string             `json:"hint"`
	State         string             `json:"state"`
	Scopes        []string           `json:"scopes"`
	ExpiresAt     *time.Time         `json:"expires_at"`
	AllowedCIDRs  []string           `json:"allowed_cidrs"`
	RateLimit     *keyward.RateLimit `json:"rate_limit"`
	Quota         *keyward.Quota     `json:"quota"`
	Subject       string             `json:"subject"`
	Metadata      json.RawMessage    `json:"metadata"`
	CreatedBy     string             `json:"created_by"`
	CreatedAt     time.Time          `json:"created_at"`
	UpdatedAt     time.Time          `json:"updated_at"`
	RotatedAt     *time.Time         `json:"rotated_at"`
	RevokedAt     *time.Time         `json:"revoked_at"`
	RevokeReason  string             `json:"revoke_reason"`
	SuspendedAt   *time.Time         `json:"suspended_at"`
	SuspendReason string             `json:"suspend_reason"`
	LastUsedAt    *time.Time         `json:"last_used_at"`
	LastUsedIP    string             `json:"last_used_ip"`
	// Token is the secret, set only in the responses of create and rotate.
	Token string `json:"token,omitempty"`
}

func (s *Server) viewToken(t *keyward.Token) tokenView {
	v := tokenView{
		ID: t.ID, Name: t.Name, Hint: t.Hint, State: t.State(s.now()),
		Scopes: t.Scopes, ExpiresAt: t.ExpiresAt, AllowedCIDRs: t.AllowedCIDRs,
		RateLimit: t.RateLimit, Quota: t.Quota, Subject: t.Subject, Metadata: t.Metadata,
		CreatedBy: t.CreatedBy, CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt, RotatedAt: t.RotatedAt,
		RevokedAt: t.RevokedAt, RevokeReason: t.RevokeReason, SuspendedAt: t.SuspendedAt, SuspendReason: t.SuspendReason,
		LastUsedAt: t.LastUsedAt, LastUsedIP: t.LastUsedIP,
	}
	if v.Scopes == nil {
		v.Scopes = []string{}
	}
	if v.AllowedCIDRs == nil {
		v.AllowedCIDRs = []string{}
	}
	// Last use is flushed in batches; the engine knows the newest one.
	if at, ip, ok := s.engine.LastUse(t.ID); ok && (v.LastUsedAt == nil || at.After(*v.LastUsedAt)) {
		v.LastUsedAt, v.LastUsedIP = &at, ip
	}
	return v
}

// How tokenFields reads a body.
type fieldsMode int

const (
	creating    fieldsMode = iota // a new token: null means absent
	patchSyntax                   // a merge patch, checked on an empty token
	patchStored                   // a merge patch, applied to the stored token
)

// tokenFields applies the client-settable fields present in o to t. On a
// create null means absent; on a patch (RFC 7396) null clears and nested
// objects merge. A rate limit or quota needs both of its fields unless it
// merges into the stored token's.
func (s *Server) tokenFields(o *object, t *keyward.Token, mode fieldsMode) {
	patch := mode != creating
	if o.isNull("name") {
		o.fail("name", "name cannot be cleared")
	} else {
		o.str("name", &t.Name)
	}
	if o.isNull("scopes") {
		t.Scopes = nil
	} else {
		o.strs("scopes", &t.Scopes)
	}
	var in time.Duration
	hasIn := o.duration("expires_in", &in)
	var at time.Time
	hasAt := o.time("expires_at", &at)
	switch {
	case hasIn && (hasAt || patch && o.isNull("expires_at")): // a patch's null clears it
		o.fail("expires_in", "give expires_in or expires_at, not both")
	case hasIn && in < time.Second:
		o.fail("expires_in", "expires_in must be at least 1s")
	case hasIn:
		// Not rounded to seconds: a token lives as long as asked (to
		// the microsecond, which both stores keep), and the workspace
		// policy's longest life is not exceeded by a rounding.
		e := s.now().Add(in).Truncate(time.Microsecond)
		t.ExpiresAt = &e
	case hasAt:
		t.ExpiresAt = &at
	case o.isNull("expires_at"):
		t.ExpiresAt = nil
	}
	if o.isNull("allowed_cidrs") {
		t.AllowedCIDRs = nil
	} else {
		o.strs("allowed_cidrs", &t.AllowedCIDRs)
	}
	if o.isNull("rate_limit") {
		t.RateLimit = nil
	} else if r := o.object("rate_limit"); r != nil {
		rl := keyward.RateLimit{}
		if patch && t.RateLimit != nil {
			rl = *t.RateLimit
		} else if mode != patchSyntax {
			r.need(noneToMerge(patch, "rate limit"), "limit", "window")
		}
		r.noNulls("rate_limit", "limit", "window")
		r.int("limit", &rl.Limit)
		var w time.Duration
		if r.duration("window", &w) {
			rl.Window = keyward.Duration(w)
		}
		r.done()
		t.RateLimit = &rl
	}
	if o.isNull("quota") {
		t.Quota = nil
	} else if q := o.object("quota"); q != nil {
		qt := keyward.Quota{}
		if patch && t.Quota != nil {
			qt = *t.Quota
		} else if mode != patchSyntax {
			q.need(noneToMerge(patch, "quota"), "limit", "period")
		}
		q.noNulls("quota", "limit", "period")
		q.int("limit", &qt.Limit)
		q.str("period", &qt.Period)
		q.done()
		t.Quota = &qt
	}
	if o.isNull("subject") {
		t.Subject = ""
	} else {
		o.str("subject", &t.Subject)
	}
	if raw, ok := o.raw("metadata"); ok {
		switch {
		case string(raw) == "null":
			t.Metadata = nil
		case patch:
			t.Metadata = mergePatch(t.Metadata, raw)
		default:
			t.Metadata = append(json.RawMessage(nil), raw...)
		}
	}
}

// onlyGiven returns the validation error err of the token given, which
// holds what the patch body gives on an empty token, without the field
// errors of values the body does not give: those are the stored token's
// (the window of a rate limit the patch sets only the limit of), not known
// before it is read. Any other error is returned unchanged.
func onlyGiven(body map[string]json.RawMessage, given *keyward.Token, err error) error {
	var ke *keyward.Error
	if !errors.As(err, &ke) || ke.Code != keyward.EINVALID {
		return err
	}
	var fields []keyward.FieldError
	for _, f := range ke.Fields {
		// An expiry comes from expires_at or expires_in: it is set
		// only when the body gives it.
		if f.Pointer == "/expires_at" && given.ExpiresAt != nil || gives(body, f.Pointer) {
			fields = append(fields, f)
		}
	}
	if len(fields) == 0 {
		return nil
	}
	return keyward.Invalid(fields...)
}

// gives reports whether a JSON object body holds a value, not null, at
// pointer or at an array on its way (every element of /scopes is given
// when scopes is).
func gives(body map[string]json.RawMessage, pointer string) bool {
	fields := body
	names := strings.Split(strings.TrimPrefix(pointer, "/"), "/")
	for i, name := range names {
		name = strings.NewReplacer("~1", "/", "~0", "~").Replace(name)
		v, ok := fields[name]
		if !ok || string(v) == "null" {
			return false
		}
		// Only an object on the way is decoded: an array is given whole,
		// and decoding it for each of its elements' errors (a body of
		// 200,000 bad scopes) would cost the square of its length.
		if i == len(names)-1 || len(v) == 0 || v[0] != '{' {
			return true
		}
		fields = nil
		if decodeFields(v, &fields) != nil {
			return true
		}
	}
	return true
}

// decodeFields is json.Unmarshal, which gives uses for the objects on a
// pointer's way; a test counts what it is given.
var decodeFields = json.Unmarshal

// mergePatch applies an RFC 7396 merge patch to a JSON document.
func mergePatch(target, patch json.RawMessage) json.RawMessage {
	var p map[string]json.RawMessage
	if json.Unmarshal(patch, &p) != nil || p == nil {
		return append(json.RawMessage(nil), patch...)
	}
	var t map[string]json.RawMessage
	if json.Unmarshal(target, &t) != nil || t == nil {
		t = map[string]json.RawMessage{}
	}
	for k, v := range p {
		if string(v) == "null" {
			delete(t, k)
		} else {
			t[k] = mergePatch(t[k], v)
		}
	}
	out, _ := json.Marshal(t)
	return out
}

// expiryPointer points the errors at /expires_at to /expires_in when the
// body gave the expiry as expires_in (and not expires_at): the client
// learns of the field it sent.
func expiryPointer(o *object, err error) error {
	in, hasIn := o.fields["expires_in"]
	at, hasAt := o.fields["expires_at"]
	if !hasIn || string(in) == "null" || hasAt && string(at) != "null" {
		return err
	}
	return renamePointer(err, "/expires_at", "/expires_in")
}

func (s *Server) handleTokenCreate(w http.ResponseWriter, r *http.Request) {
	o, err := s.decode(w, r, false)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	t := &keyward.Token{}
	s.tokenFields(o, t, creating)
	if err := o.done(); err != nil {
		// With the problems of the fields that did decode, which the
		// service would report next.
		s.writeError(w, r, expiryPointer(o, alsoInvalid(err, t.Validate(s.now()))))
		return
	}
	t, text, err := s.svc.CreateToken(r.Context(), caller(r), t)
	if err != nil {
		s.writeError(w, r, expiryPointer(o, err))
		return
	}
	v := s.viewToken(t)
	v.Token = text
	// Relative, so that it holds behind a proxy that serves the API under
	// a path prefix: tokens/ID against /v1/tokens is /v1/tokens/ID.
	w.Header().Set("Location", "tokens/"+t.ID)
	writeJSON(w, http.StatusCreated, v)
}

func (s *Server) handleTokenList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, lerr := pageLimit(q.Get("limit"))
	cursor, cerr := pageCursor(q, keyward.PrefixToken)
	f := keyward.TokenFilter{State: q.Get("state"), Subject: q.Get("subject"), Scope: q.Get("scope"), Name: q.Get("name"), After: cursor, Limit: limit + 1}
	var serr error
	switch f.State {
	case "", keyward.StateActive, keyward.StateExpired, keyward.StateRevoked, keyward.StateSuspended:
	default:
		serr = keyward.Invalid(keyward.FieldError{Pointer: "/state", Detail: "state must be one of active, expired, revoked, suspended"})
	}
	if err := keyward.JoinInvalid(lerr, cerr, serr); err != nil {
		s.writeError(w, r, err)
		return
	}
	tokens, err := s.svc.Tokens(r.Context(), caller(r), f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page(tokens, limit, func(t *keyward.Token) string { return t.ID }, s.viewToken))
}

// Page sizes of every list.
const (
	defaultPageSize = 50
	maxPageSize     = 500
)

// pageCursor returns a list's cursor: empty, or an id of the listed kind
// (the last of the page before). Anything else is refused rather than
// taken as an id to list after, which would answer a wrong page.
func pageCursor(q url.Values, prefix string) (string, error) {
	c := q.Get("cursor")
	if c != "" && !keyward.ValidID(prefix, c) {
		return "", keyward.Invalid(keyward.FieldError{Pointer: "/cursor", Detail: "cursor must be the next_cursor of a previous page"})
	}
	return c, nil
}

func pageLimit(s string) (int, error) {
	if s == "" {
		return defaultPageSize, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxPageSize {
		return 0, keyward.Invalid(keyward.FieldError{Pointer: "/limit", Detail: "limit must be a whole number from 1 to 500"})
	}
	return n, nil
}

func (s *Server) handleTokenGet(w http.ResponseWriter, r *http.Request) {
	t, err := s.svc.Token(r.Context(), caller(r), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.viewToken(t))
}

func (s *Server) handleTokenUpdate(w http.ResponseWriter, r *http.Request) {
	o, err := s.decode(w, r, false)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// The patch is checked once against an empty token for syntax, so that
	// a bad body answers 400 before the token is read, and once more, for
	// its meaning, on the stored token.
	given := &keyward.Token{}
	s.tokenFields(o, given, patchSyntax)
	if err := o.done(); err != nil {
		// With the problems of the values the patch gives that did
		// decode, as a create reports them: a request learns of every
		// field it must fix at once.
		s.writeError(w, r, expiryPointer(o, alsoInvalid(err, onlyGiven(o.fields, given, given.Validate(s.now())))))
		return
	}
	body := o.fields
	var missing []keyward.FieldError // of a limit the token does not have
	t, err := s.svc.UpdateToken(r.Context(), caller(r), r.PathValue("id"), func(t *keyward.Token) {
		again := &object{fields: body, used: map[string]bool{}, errs: &[]keyward.FieldError{}}
		s.tokenFields(again, t, patchStored)
		missing = *again.errs
	})
	if err != nil && len(missing) > 0 {
		// The limit's zero field failed validation too: say what it
		// lacks, not that zero is not allowed.
		err = alsoInvalid(keyward.Invalid(missing...), err)
	}
	if err != nil {
		s.writeError(w, r, expiryPointer(o, err))
		return
	}
	writeJSON(w, http.StatusOK, s.viewToken(t))
}

func (s *Server) handleTokenRotate(w http.ResponseWriter, r *http.Request) {
	o, err := s.decode(w, r, true)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var grace time.Duration
	o.duration("grace_period", &grace)
	if err := o.done(); err != nil {
		s.writeError(w, r, err)
		return
	}
	t, text, err := s.svc.RotateToken(r.Context(), caller(r), r.PathValue("id"), grace)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	v := s.viewToken(t)
	v.Token = text
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) handleTokenRevoke(w http.ResponseWriter, r *http.Request) {
	s.changeState(w, r, s.svc.RevokeToken)
}

func (s *Server) handleTokenSuspend(w http.ResponseWriter, r *http.Request) {
	s.changeState(w, r, s.svc.SuspendToken)
}

func (s *Server) handleTokenResume(w http.ResponseWriter, r *http.Request) {
	s.changeState(w, r, s.svc.ResumeToken)
}

// changeState decodes the optional {"reason": "..."} body of a state
// change, applies change and answers with the token.
func (s *Server) changeState(w http.ResponseWriter, r *http.Request, change func(context.Context, manage.Caller, string, string) (*keyward.Token, error)) {
	o, err := s.decode(w, r, true)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var reason string
	o.str("reason", &reason)
	if err := o.done(); err != nil {
		s.writeError(w, r, err)
		return
	}
	t, err := change(r.Context(), caller(r), r.PathValue("id"), reason)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.viewToken(t))
}

// decode reads the body and parses it as one JSON object.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, allowEmpty bool) (*object, error) {
	body, err := s.readBody(w, r, allowEmpty)
	if err != nil {
		return nil, err
	}
	return decodeObject(body)
}

// noneToMerge says why a field of a limit is required: on a PATCH, that
// the token has no such limit for the patch to merge into.
func noneToMerge(patch bool, limit string) string {
	if !patch {
		return ""
	}
	return ": the token has no " + limit + " to merge into, so give both fields"
}
