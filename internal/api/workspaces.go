package api

import (
	"encoding/json"
	"net/http"
	"net/url"
	"time"

	"github.com/keyward/keyward"
)

type workspaceView struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	TokenPrefix string    `json:"token_prefix"`
	CreatedAt   time.Time `json:"created_at"`
	// Token is the first management token, set only on create.
	Token string `json:"token,omitempty"`
}

func viewWorkspace(ws *keyward.Workspace) workspaceView {
	return workspaceView{ID: ws.ID, Name: ws.Name, TokenPrefix: ws.TokenPrefix, CreatedAt: ws.CreatedAt}
}

func (s *Server) handleWorkspaceCreate(w http.ResponseWriter, r *http.Request) {
	o, err := s.decode(w, r, false)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var ws keyward.Workspace
	o.str("name", &ws.Name)
	if o.str("token_prefix", &ws.TokenPrefix) && ws.TokenPrefix == "" {
		// Absent or null takes the default; an empty one is no prefix.
		o.fail("token_prefix", "%v", keyward.ValidatePrefix(""))
	}
	if err := o.done(); err != nil {
		s.writeError(w, r, err)
		return
	}
	created, text, err := s.svc.CreateWorkspace(r.Context(), caller(r), &ws)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	v := viewWorkspace(created)
	v.Token = text
	writeJSON(w, http.StatusCreated, v)
}

func (s *Server) handleWorkspaceList(w http.ResponseWriter, r *http.Request) {
	limit, lerr := pageLimit(r.URL.Query().Get("limit"))
	cursor, cerr := pageCursor(r.URL.Query(), keyward.PrefixWorkspace)
	if err := keyward.JoinInvalid(lerr, cerr); err != nil {
		s.writeError(w, r, err)
		return
	}
	items, err := s.svc.Workspaces(r.Context(), caller(r), keyward.WorkspaceFilter{After: cursor, Limit: limit + 1})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page(items, limit, func(ws *keyward.Workspace) string { return ws.ID }, viewWorkspace))
}

type auditView struct {
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

func (s *Server) handleAuditList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, lerr := pageLimit(q.Get("limit"))
	cursor, cerr := pageCursor(q, keyward.PrefixEvent)
	f := keyward.AuditFilter{
		WorkspaceID: caller(r).WorkspaceID,
		Before:      cursor,
		Limit:       limit + 1,
		Actor:       q.Get("actor"),
		Action:      q.Get("action"),
		Target:      q.Get("target"),
	}
	// Every bad parameter in one answer, as the other lists give them.
	rerr := queryRange(q, &f.From, &f.To)
	if err := keyward.JoinInvalid(lerr, cerr, keyward.Invalid(rerr...)); err != nil {
		s.writeError(w, r, err)
		return
	}
	events, err := s.store.FindAuditEvents(r.Context(), f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page(events, limit, func(e *keyward.AuditEvent) string { return e.ID }, viewAudit))
}

// queryRange reads the query parameters from and to, RFC 3339 times, into
// from and to (UTC) when present, naming each one that is malformed, and
// to when it comes before from.
func queryRange(q url.Values, from, to *time.Time) []keyward.FieldError {
	var errs []keyward.FieldError
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"from", from}, {"to", to}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		t, err := keyward.ParseRFC3339(v)
		if err != nil {
			errs = append(errs, keyward.FieldError{Pointer: "/" + p.name, Detail: p.name + ` must be an RFC 3339 time such as "2026-12-31T23:59:59Z"`})
			continue
		}
		if t.IsZero() {
			// The zero time stands for "not given" from here on.
			errs = append(errs, keyward.FieldError{Pointer: "/" + p.name, Detail: p.name + " must be after 0001-01-01T00:00:00Z"})
			continue
		}
		*p.dst = t.UTC()
	}
	if len(errs) == 0 && !from.IsZero() && !to.IsZero() && to.Before(*from) {
		errs = append(errs, keyward.FieldError{Pointer: "/to", Detail: "to must not be before from"})
	}
	return errs
}

func viewAudit(e *keyward.AuditEvent) auditView {
	changes := e.Changes
	if len(changes) == 0 {
		// Empty text, which a store never writes, is no JSON: the link
		// covers it as it covers none, so it is none.
		changes = json.RawMessage("null")
	}
	return auditView{ID: e.ID, Time: e.Time, Action: e.Action, Actor: e.Actor, Target: e.Target, IP: e.IP, UserAgent: e.UserAgent, RequestID: e.RequestID, Changes: changes}
}
