package api

import (
	"context"
	"encoding/csv"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward"
)

// Bounds of the dormant report's days parameter.
const (
	defaultDormantDays = 90
	maxDormantDays     = 3650
)

func dormantDays(s string) (int, error) {
	if s == "" {
		return defaultDormantDays, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxDormantDays {
		return 0, keyward.Invalid(keyward.FieldError{Pointer: "/days", Detail: "days must be a whole number from 1 to 3650"})
	}
	return n, nil
}

// handleReportDormant lists the active tokens not used for the given number
// of days, never-used tokens included, in pages like GET /v1/tokens.
func (s *Server) handleReportDormant(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var errs []keyward.FieldError
	limit, err := pageLimit(q.Get("limit"))
	if err != nil {
		errs = append(errs, fieldErrors(err)...)
	}
	days, err := dormantDays(q.Get("days"))
	if err != nil {
		errs = append(errs, fieldErrors(err)...)
	}
	cursor, err := pageCursor(q, keyward.PrefixToken)
	if err != nil {
		errs = append(errs, fieldErrors(err)...)
	}
	if len(errs) > 0 {
		s.writeError(w, r, keyward.Invalid(errs...))
		return
	}
	since := s.now().Add(-time.Duration(days) * 24 * time.Hour)
	if s.engine != nil {
		// The last uses this node holds go to the store first, so that
		// the store's answer has them, those of tokens the engine let go
		// of meanwhile (its cache forgotten) included. A store that
		// cannot take them now leaves usedSince to catch what it can.
		s.engine.Flush(r.Context())
	}
	f := keyward.TokenFilter{State: keyward.StateActive, UnusedSince: since, After: cursor, Limit: limit + 1}
	tokens, err := s.svc.Tokens(r.Context(), caller(r), f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// The store knows last use only as of the last flush. A token this node
	// saw used since is not dormant: it is left out of the page, which may
	// thus hold fewer than limit items while the cursor still pages on
	// from the store's page.
	out := list[tokenView]{Items: make([]tokenView, 0, min(len(tokens), limit))}
	for i, t := range tokens {
		if i == limit {
			out.NextCursor = tokens[i-1].ID
			break
		}
		if s.usedSince(t.ID, since) {
			continue
		}
		out.Items = append(out.Items, s.viewToken(t))
	}
	writeJSON(w, http.StatusOK, out)
}

// usedSince reports whether this node has seen the token used, and not yet
// flushed, at or after since.
func (s *Server) usedSince(tokenID string, since time.Time) bool {
	if s.engine == nil {
		return false
	}
	at, _, ok := s.engine.LastUse(tokenID)
	return ok && !at.Before(since)
}

// fieldErrors returns the field errors of an EINVALID error.
func fieldErrors(err error) []keyward.FieldError {
	if e, ok := err.(*keyward.Error); ok {
		return e.Fields
	}
	return nil
}

// inventoryView is one token of the inventory report.
type inventoryView struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	State      string     `json:"state"`
	Subject    string     `json:"subject"`
	Scopes     []string   `json:"scopes"`
	CreatedAt  time.Time  `json:"created_at"`
	CreatedBy  string     `json:"created_by"`
	AgeDays    int64      `json:"age_days"`
	ExpiresAt  *time.Time `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	LastUsedIP string     `json:"last_used_ip"`
}

// viewInventory returns t as the inventory shows it. Its state and last
// use are those of viewToken; age_days counts whole days since creation.
func (s *Server) viewInventory(t *keyward.Token) inventoryView {
	v := s.viewToken(t)
	return inventoryView{
		ID: v.ID, Name: v.Name, State: v.State, Subject: v.Subject, Scopes: v.Scopes,
		CreatedAt: v.CreatedAt, CreatedBy: v.CreatedBy,
		AgeDays:   max(0, int64(s.now().Sub(v.CreatedAt)/(24*time.Hour))),
		ExpiresAt: v.ExpiresAt, LastUsedAt: v.LastUsedAt, LastUsedIP: v.LastUsedIP,
	}
}

// inventoryColumns is the header row of the CSV inventory.
var inventoryColumns = []string{"id", "name", "state", "subject", "scopes", "created_at", "created_by", "age_days", "expires_at", "last_used_at", "last_used_ip"}

// record returns v as a CSV row in the order of inventoryColumns, each
// cell guarded by keyward.CSVSafe.
func (v *inventoryView) record() []string {
	tm := func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	row := []string{
		v.ID, v.Name, v.State, v.Subject, strings.Join(v.Scopes, " "),
		tm(&v.CreatedAt), v.CreatedBy, strconv.FormatInt(v.AgeDays, 10),
		tm(v.ExpiresAt), tm(v.LastUsedAt), v.LastUsedIP,
	}
	for i, c := range row {
		row[i] = keyward.CSVSafe(c)
	}
	return row
}

// handleReportTokens answers the inventory of every token of the caller's
// workspace, in any state: as JSON pages, or with format=csv as one CSV
// file streamed page by page from the store.
func (s *Server) handleReportTokens(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	switch q.Get("format") {
	case "", "json":
	case "csv":
		var errs []keyward.FieldError
		for _, p := range []string{"limit", "cursor"} {
			if q.Get(p) != "" { // empty is absent, as everywhere
				errs = append(errs, keyward.FieldError{Pointer: "/" + p, Detail: "the CSV inventory holds every token and takes no " + p})
			}
		}
		if len(errs) > 0 {
			s.writeError(w, r, keyward.Invalid(errs...))
			return
		}
		s.writeInventoryCSV(w, r)
		return
	default:
		s.writeError(w, r, keyward.Invalid(keyward.FieldError{Pointer: "/format", Detail: "format must be json or csv"}))
		return
	}
	limit, lerr := pageLimit(q.Get("limit"))
	cursor, cerr := pageCursor(q, keyward.PrefixToken)
	if err := keyward.JoinInvalid(lerr, cerr); err != nil {
		s.writeError(w, r, err)
		return
	}
	tokens, err := s.svc.Tokens(r.Context(), caller(r), keyward.TokenFilter{After: cursor, Limit: limit + 1})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page(tokens, limit, func(t *keyward.Token) string { return t.ID }, s.viewInventory))
}

// csvPageTimeout bounds the reading and writing of one page of the CSV
// inventory.
const csvPageTimeout = 20 * time.Second

// csvPageSize is how many tokens the CSV inventory reads from the store at
// a time.
const csvPageSize = maxPageSize

// writeInventoryCSV streams the inventory as CSV. An error on the first
// page answers problem+json; once the header is sent, an error aborts the
// response, so that a client never takes a truncated file for a whole one.
func (s *Server) writeInventoryCSV(w http.ResponseWriter, r *http.Request) {
	// Every token, however many: the request's own deadline (serve's,
	// for a request answered at once) and the server's write timeout
	// bound each page instead of the whole. A client that goes away is
	// seen at the next write.
	ctx := context.WithoutCancel(r.Context())
	rc := http.NewResponseController(w)
	f := keyward.TokenFilter{Limit: csvPageSize}
	page := func() ([]*keyward.Token, error) {
		rc.SetWriteDeadline(time.Now().Add(csvPageTimeout))
		pctx, cancel := context.WithTimeout(ctx, csvPageTimeout)
		defer cancel()
		return s.svc.Tokens(pctx, caller(r), f)
	}
	tokens, err := page()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8")
	h.Set("Content-Disposition", `attachment; filename="keyward-tokens.csv"`)
	w.WriteHeader(http.StatusOK)
	cw := csv.NewWriter(w)
	cw.Write(inventoryColumns)
	for {
		for _, t := range tokens {
			v := s.viewInventory(t)
			cw.Write(v.record())
		}
		cw.Flush()
		if err := cw.Error(); err != nil {
			return // the client went away
		}
		if len(tokens) < csvPageSize {
			return
		}
		f.After = tokens[len(tokens)-1].ID
		if tokens, err = page(); err != nil {
			s.log.LogAttrs(r.Context(), slog.LevelError, "token inventory aborted", slog.String("request_id", requestID(r.Context())), slog.Any("err", err))
			panic(http.ErrAbortHandler)
		}
	}
}
