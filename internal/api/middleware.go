package api

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/manage"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/verify"
)

type ctxKey int

const (
	keyRequest ctxKey = iota
)

// reqInfo travels in the request context: set by the outer middleware,
// filled in by authentication, read by the access log.
type reqInfo struct {
	id     string
	caller manage.Caller
	authed bool
	// hint is the hint of the token the caller authenticated with ("" before
	// then), which begins with its workspace's token prefix: kept as it is,
	// for the error path to read (secretPrefixes), so that an admitted
	// request parses and copies nothing more.
	hint string
}

func info(ctx context.Context) *reqInfo {
	if ri, ok := ctx.Value(keyRequest).(*reqInfo); ok {
		return ri
	}
	return &reqInfo{}
}

func requestID(ctx context.Context) string { return info(ctx).id }

// caller returns the authenticated caller of the request.
func caller(r *http.Request) manage.Caller { return info(r.Context()).caller }

// requestID gives every request an id, the client's X-Request-Id when it is
// well-formed, and echoes it in the response.
func (s *Server) requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := keyward.RequestID(r.Header.Get("X-Request-Id"))
		w.Header().Set("X-Request-Id", id)
		ri := &reqInfo{id: id}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), keyRequest, ri)))
	})
}

// Constant header values, shared by every response (net/http only reads
// them), so that setting them does not allocate.
var (
	nosniff         = []string{"nosniff"}
	noStore         = []string{"no-store"}
	noCache         = []string{"no-cache"}
	contentTypeJSON = []string{"application/json"}
)

// headers sets the headers every API response carries.
func (s *Server) headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["X-Content-Type-Options"] = nosniff
		if strings.HasPrefix(r.URL.Path, "/v1/") || strings.HasPrefix(r.URL.Path, "/oauth2/") {
			// Responses may carry secrets (create, rotate) or token details:
			// no cache may keep them.
			h["Cache-Control"] = noStore
		}
		if strings.HasPrefix(r.URL.Path, "/oauth2/") {
			h["Pragma"] = noCache // for HTTP/1.0 caches, as RFC 6749 §5.1 asks
		}
		next.ServeHTTP(w, r)
	})
}

// statusWriter records the status of a response for the access log and
// metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// accessLog writes one line per request: never the query string, never a
// credential; the token id of an authenticated caller.
func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		// Deferred, so that a response cut short (http.ErrAbortHandler,
		// which recoverPanics lets through to net/http) gets its line too,
		// with the status recoverPanics recorded.
		defer func() { s.logRequest(r, sw.status, start) }()
		next.ServeHTTP(sw, r)
	})
}

// logRequest writes the access-log line of r, answered with status.
func (s *Server) logRequest(r *http.Request, status int, start time.Time) {
	ri := info(r.Context())
	var buf [7]slog.Attr
	attrs := append(buf[:0],
		slog.String("request_id", ri.id),
		slog.String("method", secret.Redact(r.Method)),
		slog.String("path", secret.RedactPath(r.URL)),
		slog.Int("status", status),
		slog.Duration("duration", time.Since(start)),
		slog.String("client_ip", remoteIP(r).String()),
	)
	if ri.authed {
		attrs = append(attrs, slog.String("token_id", ri.caller.Actor.ID))
	}
	// Straight to the handler: Logger.LogAttrs would walk the stack
	// for a source position on every request.
	if h := s.log.Handler(); h.Enabled(r.Context(), slog.LevelInfo) {
		rec := slog.NewRecord(time.Now(), slog.LevelInfo, "request", 0)
		rec.AddAttrs(attrs...)
		h.Handle(r.Context(), rec)
	}
}

// recoverPanics turns a panic in a handler into a 500, logged once as
// writeError logs an internal error, with the panic's stack, without which
// nobody can tell where it came from. A handler that panics after its
// answer began (http.ErrAbortHandler, a handler's way to cut a response
// short, or any other panic) gets its connection cut, so that the client
// cannot take what it got for the whole answer, and the request is
// recorded as the 500 it is, in the access log as in the metrics
// (instrument), not as the status that went out before the failure.
// w is accessLog's statusWriter.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v != http.ErrAbortHandler {
				s.log.LogAttrs(r.Context(), slog.LevelError, "internal error", slog.String("request_id", requestID(r.Context())),
					slog.String("method", secret.Redact(r.Method)), slog.String("path", secret.RedactPath(r.URL)),
					slog.String("err", fmt.Sprintf("panic: %v", v)), slog.String("stack", string(debug.Stack())))
			}
			sw, _ := w.(*statusWriter)
			if v != http.ErrAbortHandler && (sw == nil || sw.status == 0) {
				// Logged: the error's code alone, which writeError does not log again.
				s.writeError(w, r, &keyward.Error{Code: keyward.EINTERNAL, Message: "internal error"})
				return
			}
			if sw != nil {
				sw.status = http.StatusInternalServerError
			}
			panic(http.ErrAbortHandler)
		}()
		next.ServeHTTP(w, r)
	})
}

// remoteIP returns the client's address: the connection's, or the one
// behind a trusted proxy that serve's realip.Proxies put in RemoteAddr.
func remoteIP(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

// credential returns the management token a request presents: a Bearer
// token, or on OAuth routes the password of HTTP Basic. basic reports
// which scheme was used.
func credential(r *http.Request, oauth bool) (token string, basic bool) {
	// A token set off by a tab comes with it (secret.Bearer), and
	// verifies as MALFORMED: a credential presented, but unusable.
	if tok, ok := secret.Bearer(r.Header.Get("Authorization")); ok {
		return tok, false
	}
	if oauth {
		if _, pw, ok := r.BasicAuth(); ok {
			// RFC 6749 §2.3.1: the credentials are form-encoded before
			// Basic. A token's characters never change in that encoding;
			// a client that encodes anyway is read all the same.
			if strings.ContainsRune(pw, '%') {
				if dec, err := url.QueryUnescape(pw); err == nil {
					pw = dec
				}
			}
			return pw, true
		}
	}
	return "", false
}

// authenticate admits a request whose management token verifies with the
// route's scope, and records the caller in the request context.
func (s *Server) authenticate(rt route, next http.Handler) http.Handler {
	scopes := []string{rt.Scope}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.Header["Authorization"]) > 1 {
			// RFC 6750 §3.1: which one counts would be a guess, and a
			// proxy before keyward may have guessed otherwise.
			w.Header().Set("WWW-Authenticate", `Bearer realm="keyward", error="invalid_request"`)
			if rt.OAuth {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "give one Authorization field, not several"})
				return
			}
			s.writeError(w, r, keyward.Errorf(keyward.EINVALID, "give one Authorization field, not several"))
			return
		}
		tok, basic := credential(r, rt.OAuth)
		if tok == "" {
			s.unauthorized(w, r, rt, basic, false)
			return
		}
		ip := remoteIP(r)
		res := s.engine.Verify(r.Context(), verify.Request{Token: tok, Scopes: scopes, IP: ip})
		switch res.Outcome {
		case keyward.Valid:
		case keyward.InsufficientScope:
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="keyward", error="insufficient_scope", scope=%q`, rt.Scope))
			s.writeError(w, r, keyward.Errorf(keyward.EFORBIDDEN, "this token lacks the scope %s", rt.Scope))
			return
		case keyward.RateLimited, keyward.QuotaExceeded:
			w.Header().Set("Retry-After", strconv.FormatInt(res.RetryAfter(), 10))
			s.writeError(w, r, keyward.Errorf(keyward.ERATELIMITED, "this token is over its limit; retry later"))
			return
		default:
			if res.Err != nil {
				if rt.OAuth {
					oauthUnavailable(w)
					return
				}
				s.writeError(w, r, keyward.Errorf(keyward.EUNAVAILABLE, "the token store is unavailable"))
				return
			}
			if res.Unlooked {
				// Made-up tokens spent this node's lookup budget: a real
				// token not yet cached here must not read as invalid.
				w.Header().Set("Retry-After", "1")
				if rt.OAuth {
					oauthUnavailable(w)
					return
				}
				s.writeError(w, r, keyward.Errorf(keyward.EUNAVAILABLE, "this node is refusing lookups of unknown tokens for a moment; retry shortly"))
				return
			}
			s.unauthorized(w, r, rt, basic, true)
			return
		}
		ri := info(r.Context())
		ri.caller = manage.TokenCaller(res.Token)
		ri.caller.IP = ip.String()
		ri.caller.UserAgent = secret.UserAgent(r.UserAgent())
		ri.caller.RequestID = ri.id
		ri.authed = true
		ri.hint = res.Token.Hint
		next.ServeHTTP(w, r)
	})
}

// unauthorized answers 401 with the RFC 6750 challenge; OAuth routes answer
// in OAuth's error format. The challenge is the same whether or not a
// credential was sent (PRODUCT §5: "No or an invalid credential: 401 with
// a WWW-Authenticate: Bearer realm="keyward" header"); the problem's detail
// tells the two apart. (The gateway's adds error="invalid_token", as its
// contract says.)
func (s *Server) unauthorized(w http.ResponseWriter, r *http.Request, rt route, basic, presented bool) {
	challenge := `Bearer realm="keyward"`
	if basic {
		challenge = `Basic realm="keyward"`
	}
	if rt.OAuth {
		w.Header().Set("WWW-Authenticate", challenge)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client"})
		return
	}
	msg := "this endpoint needs a management token: Authorization: Bearer <token>"
	if presented {
		msg = "the token is not valid"
	}
	w.Header().Set("WWW-Authenticate", challenge)
	s.writeError(w, r, keyward.Errorf(keyward.EUNAUTHORIZED, "%s", msg))
}
