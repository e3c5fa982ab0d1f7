package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/secret"
)

// Error codes of the problem+json body, as docs/api.md lists them.
const (
	CodeInvalid      = "invalid"
	CodeNotFound     = "not_found"
	CodeConflict     = "conflict"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeTooLarge     = "too_large"
	CodeRateLimited  = "rate_limited"
	CodeUnavailable  = "unavailable"
	CodeInternal     = "internal"
	// CodeMethodNotAllowed is the code of a 405 answer, sent with an
	// Allow header.
	CodeMethodNotAllowed = "method_not_allowed"
)

// maxErrorSize bounds the error body the client reads.
const maxErrorSize = 64 << 10

// FieldError names one invalid field of a request by its JSON pointer
// (RFC 6901), such as "/rate_limit/limit".
type FieldError struct {
	Pointer string `json:"pointer"`
	Detail  string `json:"detail"`
}

// Error is an HTTP error answer of the server, parsed from its RFC 9457
// problem+json body. When the body is not problem+json (a proxy's page, for
// instance), only StatusCode, Title and RequestID are set.
type Error struct {
	StatusCode int          // the HTTP status, such as 404
	Type       string       // the problem type, usually "about:blank"
	Code       string       // one of the Code constants, or "" when the body had none
	Title      string       // a short summary, such as "Not Found"
	Detail     string       // what went wrong with this request
	RequestID  string       // the server's request id, for its logs
	Errors     []FieldError // the invalid fields of a validation error
	// RetryAfter is how long the server asked to wait before sending the
	// request again (its Retry-After header), on a 429 rate_limited or a
	// 503 unavailable answer; 0 when it gave none.
	RetryAfter time.Duration
}

// Error returns a one-line description such as
// "token not found (HTTP 404 not_found, request req_…)".
func (e *Error) Error() string {
	var b strings.Builder
	msg := e.Detail
	if msg == "" {
		msg = e.Title
	}
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	if msg == "" {
		msg = "request failed"
	}
	fields := e.Errors
	if len(fields) == 1 && fields[0].Detail == msg {
		// The server's detail is the one field's: said once, with where.
		msg, fields = "", nil
		if p := e.Errors[0].Pointer; p != "" {
			msg = p + ": "
		}
		msg += e.Errors[0].Detail
	}
	b.WriteString(msg)
	for i, f := range fields {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		if f.Pointer != "" {
			b.WriteString(f.Pointer + ": ")
		}
		b.WriteString(f.Detail)
	}
	fmt.Fprintf(&b, " (HTTP %d", e.StatusCode)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.RequestID != "" {
		b.WriteString(", request " + e.RequestID)
	}
	b.WriteString(")")
	return oneLine(b.String())
}

// oneLine replaces control characters, so that a server's text cannot
// break a log line or drive a terminal.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return ' '
		}
		return r
	}, s)
}

// problem is the RFC 9457 body.
type problem struct {
	Type      string       `json:"type"`
	Title     string       `json:"title"`
	Status    int          `json:"status"`
	Detail    string       `json:"detail"`
	Code      string       `json:"code"`
	RequestID string       `json:"request_id"`
	Errors    []FieldError `json:"errors"`
	// OAuth routes answer their own errors in OAuth's format (RFC 6749
	// §5.2): {"error": "invalid_client", "error_description": "..."}.
	OAuthError       string `json:"error"`
	OAuthDescription string `json:"error_description"`
}

// oauthCodes maps the OAuth error codes keyward's OAuth routes answer to
// the codes of the problem+json errors that mean the same.
var oauthCodes = map[string]string{
	"invalid_request":         CodeInvalid,
	"invalid_client":          CodeUnauthorized,
	"unauthorized_client":     CodeForbidden,
	"temporarily_unavailable": CodeUnavailable,
	"server_error":            CodeInternal,
}

// parseError builds the *Error of a response outside 2xx.
func (c *Client) parseError(resp *http.Response) error {
	e := &Error{
		StatusCode: resp.StatusCode,
		Title:      http.StatusText(resp.StatusCode),
		RequestID:  resp.Header.Get("X-Request-Id"),
		RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "application/problem+json" || mt == "application/json" {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorSize))
		var p problem
		if json.Unmarshal(b, &p) == nil {
			if p.Title != "" {
				e.Title = p.Title
			}
			if p.RequestID != "" {
				e.RequestID = p.RequestID
			}
			e.Type, e.Code, e.Detail, e.Errors = p.Type, p.Code, p.Detail, p.Errors
			if e.Code == "" && p.OAuthError != "" {
				// An OAuth route's error: its code says what the
				// status alone does not (the detail, or the code itself
				// when there is none).
				e.Code = oauthCodes[p.OAuthError]
				e.Detail = p.OAuthDescription
				if e.Detail == "" {
					e.Detail = p.OAuthError
				}
			}
		}
	}
	// A server should never echo the credential; make sure it cannot reach
	// an error string even if one does.
	e.Type = c.redact(e.Type)
	e.Title = c.redact(e.Title)
	e.Detail = c.redact(e.Detail)
	e.RequestID = c.redact(e.RequestID)
	for i := range e.Errors {
		e.Errors[i].Pointer = c.redact(e.Errors[i].Pointer)
		e.Errors[i].Detail = c.redact(e.Errors[i].Detail)
	}
	return e
}

// retryAfter parses a Retry-After header (RFC 9110 §10.2.3): a number of
// seconds or an HTTP date. It returns 0 for an empty or malformed value.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(24*time.Hour/time.Second)*365 {
			n = int64(24*time.Hour/time.Second) * 365
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now).Round(time.Second)
	}
	return 0
}

// redact takes the client's token out of s, and anything else shaped like
// a token's secret, such as one given to Verify or Introspect, in case a
// server (or a proxy before it) echoes it.
func (c *Client) redact(s string) string {
	if c.token != "" {
		s = strings.ReplaceAll(s, c.token, "[redacted]")
	}
	return secret.Redact(s)
}

// StatusCode returns the HTTP status of err if it is or wraps an *Error,
// and 0 otherwise.
func StatusCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.StatusCode
	}
	return 0
}

// IsInvalid reports whether err is a 400 answer: the request failed
// validation (see Error.Errors).
func IsInvalid(err error) bool { return StatusCode(err) == http.StatusBadRequest }

// IsUnauthorized reports whether err is a 401 answer: no or an invalid
// credential.
func IsUnauthorized(err error) bool { return StatusCode(err) == http.StatusUnauthorized }

// IsForbidden reports whether err is a 403 answer: the credential lacks a
// scope.
func IsForbidden(err error) bool { return StatusCode(err) == http.StatusForbidden }

// IsNotFound reports whether err is a 404 answer: no such object in the
// caller's workspace.
func IsNotFound(err error) bool { return StatusCode(err) == http.StatusNotFound }

// IsConflict reports whether err is a 409 answer: the object's state
// forbids the operation, or a name is taken.
func IsConflict(err error) bool { return StatusCode(err) == http.StatusConflict }

// IsRateLimited reports whether err is a 429 answer: the management token
// is over its rate limit or quota. The *Error's RetryAfter says when to
// send the request again.
func IsRateLimited(err error) bool { return StatusCode(err) == http.StatusTooManyRequests }

// IsUnavailable reports whether err is a 503 answer: the server's store
// could not answer in time, or the node refuses lookups of unknown tokens
// for a moment. Nothing was written; the same request may be sent again
// after the *Error's RetryAfter.
func IsUnavailable(err error) bool { return StatusCode(err) == http.StatusServiceUnavailable }

// RetryAfter returns how long the server asked to wait before sending the
// request again, if err is or wraps an *Error with a Retry-After header,
// and 0 otherwise.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}
