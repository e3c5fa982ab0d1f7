package api

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/secret"
)

// problem is an RFC 9457 problem detail.
type problem struct {
	Type      string               `json:"type"`
	Title     string               `json:"title"`
	Status    int                  `json:"status"`
	Detail    string               `json:"detail,omitempty"`
	Code      string               `json:"code"`
	RequestID string               `json:"request_id,omitempty"`
	Errors    []keyward.FieldError `json:"errors,omitempty"`
}

// errMethod is the API's own code for a method a path does not take; it
// has no meaning outside HTTP.
const errMethod = "method_not_allowed"

// statusOf maps an error code to its HTTP status. It is the only place
// that does.
func statusOf(code string) int {
	switch code {
	case keyward.EINVALID:
		return http.StatusBadRequest
	case keyward.EUNAUTHORIZED:
		return http.StatusUnauthorized
	case keyward.EFORBIDDEN:
		return http.StatusForbidden
	case keyward.ENOTFOUND:
		return http.StatusNotFound
	case keyward.ECONFLICT:
		return http.StatusConflict
	case keyward.ETOOLARGE:
		return http.StatusRequestEntityTooLarge
	case keyward.ERATELIMITED:
		return http.StatusTooManyRequests
	case keyward.EUNAVAILABLE:
		return http.StatusServiceUnavailable
	case errMethod:
		return http.StatusMethodNotAllowed
	}
	return http.StatusInternalServerError
}

// writeError answers with err as problem+json. An internal error is logged
// once, here, and its cause is never shown to the client.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := keyward.ErrorCode(err)
	status := statusOf(code)
	p := problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Code: code, RequestID: requestID(r.Context())}
	var e *keyward.Error
	if errors.As(err, &e) {
		// A value quoted back (an unknown field's name, a scope, a CIDR,
		// a metadata key) may be a secret pasted in the wrong place, with
		// its prefix or without: error bodies end up in clients' logs and
		// bug reports, so it does not come back.
		prefixes := secretPrefixes(r)
		p.Detail, p.Errors = secret.RedactAll(e.Message, prefixes...), redactFields(e.Fields, prefixes)
		if code == keyward.EUNAVAILABLE {
			s.log.LogAttrs(r.Context(), slog.LevelWarn, "store unavailable", slog.String("request_id", p.RequestID), slog.String("path", secret.RedactPath(r.URL)), slog.Any("err", err))
		}
	} else if r.Context().Err() != nil {
		// The request's context ended first: the client went away (no
		// one reads this answer), or the request ran out of its time,
		// waiting on a store that hangs. Neither is keyward's fault, and
		// the error need not say so (SQLite's is "interrupted").
		status, p.Status, p.Title = http.StatusServiceUnavailable, http.StatusServiceUnavailable, http.StatusText(http.StatusServiceUnavailable)
		p.Code, p.Detail = keyward.EUNAVAILABLE, "the request took too long; try again shortly"
		s.log.LogAttrs(r.Context(), slog.LevelWarn, "request ended before its answer", slog.String("request_id", p.RequestID), slog.String("path", secret.RedactPath(r.URL)), slog.Any("err", err))
	} else {
		p.Detail = "internal error"
		s.log.LogAttrs(r.Context(), slog.LevelError, "internal error", slog.String("request_id", p.RequestID), slog.String("method", secret.Redact(r.Method)), slog.String("path", secret.RedactPath(r.URL)), slog.Any("err", err))
	}
	switch status {
	case http.StatusUnauthorized:
		if w.Header().Get("WWW-Authenticate") == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="keyward"`)
		}
	case http.StatusServiceUnavailable:
		if w.Header().Get("Retry-After") == "" {
			w.Header().Set("Retry-After", unavailableRetry)
		}
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(p)
}

// secretPrefixes returns the prefixes whose secrets' bodies an error
// answering r must not carry without their prefix: the caller's
// workspace's, once authenticated, and the default one. The caller's is
// read from its token's hint ("acme_…x9Qa") here, on the error path, not
// on every admitted request.
func secretPrefixes(r *http.Request) []string {
	hint := info(r.Context()).hint
	if i := strings.LastIndex(hint, "_…"); i > 0 {
		return secret.Prefixes(hint[:i])
	}
	return secret.Prefixes("")
}

// redactFields returns fs with every secret in a pointer or detail taken
// out (see secret.RedactAll); fs itself when it holds none.
func redactFields(fs []keyward.FieldError, prefixes []string) []keyward.FieldError {
	var out []keyward.FieldError
	for i, f := range fs {
		p, d := secret.RedactAll(f.Pointer, prefixes...), secret.RedactAll(f.Detail, prefixes...)
		if out == nil && (p != f.Pointer || d != f.Detail) {
			out = append(make([]keyward.FieldError, 0, len(fs)), fs[:i]...)
		}
		if out != nil {
			out = append(out, keyward.FieldError{Pointer: p, Detail: d})
		}
	}
	if out == nil {
		return fs
	}
	return out
}

// writeJSON answers with v as JSON and the given status.
// A value that cannot be encoded (a time past the year 9999, say) is a
// bug: it answers 500 as a problem, as every error does, not text/plain.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte(`{"type":"about:blank","title":"Internal Server Error","status":500,"detail":"internal error","code":"internal"}` + "\n"))
		return
	}
	w.Header()["Content-Type"] = contentTypeJSON
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// list is the envelope of every list response.
type list[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// page builds a list response from up to limit+1 items: the extra item, if
// any, only tells that a next page exists, whose cursor is the id of the
// last item shown.
func page[T, V any](items []T, limit int, id func(T) string, view func(T) V) list[V] {
	out := list[V]{Items: make([]V, 0, min(len(items), limit))}
	for i, it := range items {
		if i == limit {
			out.NextCursor = id(items[i-1])
			break
		}
		out.Items = append(out.Items, view(it))
	}
	return out
}

// unavailableRetry is the Retry-After, in seconds, of a 503 whose cause
// names no better wait (the store unreachable, busy or full).
const unavailableRetry = "5"
