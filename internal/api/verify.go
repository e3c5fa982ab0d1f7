package api

import (
	"errors"
	"mime"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/verify"
)

func (s *Server) handleVerify(w http.ResponseWriter, r *http.Request) {
	start := s.engine.Now()
	body, err := s.readBody(w, r, false)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	req, err := parseVerify(body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	req.WorkspaceID = caller(r).WorkspaceID
	res := s.engine.Verify(r.Context(), req)
	if res.Err != nil {
		s.recordUse(r, usageRouteVerify, start, &req, &res, http.StatusServiceUnavailable)
		s.writeError(w, r, keyward.Errorf(keyward.EUNAVAILABLE, "the token store is unavailable"))
		return
	}
	s.recordUse(r, usageRouteVerify, start, &req, &res, http.StatusOK)
	out := appendVerify(make([]byte, 0, 512), res)
	w.Header()["Content-Type"] = contentTypeJSON
	w.Write(append(out, '\n'))
}

// parseVerify decodes a verify request, naming each invalid field.
func parseVerify(body []byte) (verify.Request, error) {
	if req, ok := fastVerifyBody(body); ok {
		return req, nil
	}
	return decodeVerify(body)
}

// decodeVerify is parseVerify's general decoder, for any body the fast
// one leaves to it; FuzzFastVerifyBody holds the two to one result.
func decodeVerify(body []byte) (verify.Request, error) {
	var req verify.Request
	o, err := decodeObject(body)
	if err != nil {
		return req, err
	}
	if !o.present("token") || o.isNull("token") {
		o.fail("token", "token is required")
	} else {
		o.str("token", &req.Token)
	}
	if o.strs("scopes", &req.Scopes) {
		for i, sc := range req.Scopes {
			if err := keyward.ValidateScope(sc); err != nil {
				o.failAt("scopes", i, "%v", err)
			}
		}
	}
	// An empty ip is no ip, as clients that always send the field write it:
	// a token with an allowlist then fails closed, as PRODUCT §4 asks.
	var ip string
	if o.str("ip", &ip) && ip != "" {
		a, err := netip.ParseAddr(ip)
		if err != nil || a.Zone() != "" {
			o.fail("ip", "ip must be an IPv4 or IPv6 address")
		}
		req.IP = a
	}
	return req, o.done()
}

// handleIntrospect answers RFC 7662 introspection. Every token that is not
// active, for whatever reason, answers the same bytes.
func (s *Server) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	tok, ok := s.oauthForm(w, r)
	if !ok {
		return
	}
	start := s.engine.Now()
	req := verify.Request{Token: tok, WorkspaceID: caller(r).WorkspaceID}
	res := s.engine.Introspect(r.Context(), req)
	if res.Err != nil {
		s.recordUse(r, usageRouteIntrospect, start, &req, &res, http.StatusServiceUnavailable)
		oauthUnavailable(w)
		return
	}
	// Usage records what the answer said: an active token is good for
	// introspection, whatever its allowlist (no caller's IP is checked
	// here) or limits would say of a use.
	used := res
	if res.Active() {
		used.Outcome = keyward.Valid
	}
	s.recordUse(r, usageRouteIntrospect, start, &req, &used, http.StatusOK)
	if !res.Active() {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"active":false}`))
		return
	}
	t := res.Token
	out := map[string]any{
		"active":     true,
		"token_type": "Bearer",
		"scope":      strings.Join(t.Scopes, " "),
		"iat":        res.Issued().Unix(),
		"token_id":   t.ID,
		"name":       t.Name,
	}
	if t.Subject != "" {
		out["sub"] = t.Subject
	}
	if exp, ok := res.Expiry(); ok {
		out["exp"] = exp.Unix()
	}
	writeJSON(w, http.StatusOK, out)
}

// handleOAuthRevoke answers RFC 7009 revocation: any valid secret of a
// token revokes the token; an unknown token answers 200 all the same.
func (s *Server) handleOAuthRevoke(w http.ResponseWriter, r *http.Request) {
	tok, ok := s.oauthForm(w, r)
	if !ok {
		return
	}
	c := caller(r)
	// Looked up past the lookup budget: the caller is authenticated, and a
	// 200 must mean that a token this secret belongs to is revoked, even
	// while a flood of made-up tokens spends the budget.
	res := s.engine.Inspect(r.Context(), verify.Request{Token: tok, WorkspaceID: c.WorkspaceID, Unbudgeted: true})
	if res.Err != nil {
		oauthUnavailable(w)
		return
	}
	// Any secret of the token that has not been replaced for good revokes
	// it, whatever its state: a suspended or expired token could otherwise
	// come back to life with a leaked secret.
	if res.Token != nil && res.Outcome.Identified() && !res.SecretEnded && !res.Token.Revoked {
		// Whoever presents the secret may end it, whatever scopes the token
		// holds: the caller acts with the revoked token's own rights.
		c.Scopes = res.Token.Scopes
		if _, err := s.svc.RevokeToken(r.Context(), c, res.Token.ID, "revoked through /oauth2/revoke"); err != nil {
			s.log.Error("oauth revoke failed", "request_id", requestID(r.Context()), "err", err)
			oauthUnavailable(w)
			return
		}
	}
	w.WriteHeader(http.StatusOK)
}

// oauthUnavailable answers an OAuth request that cannot be served now
// (RFC 6749 §5.2 has no such code; temporarily_unavailable is §4.1.2.1's).
func oauthUnavailable(w http.ResponseWriter) {
	if w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", unavailableRetry)
	}
	writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable"})
}

// oauthForm reads the form-encoded token parameter of the OAuth endpoints,
// answering 400 invalid_request when it is missing.
func (s *Server) oauthForm(w http.ResponseWriter, r *http.Request) (string, bool) {
	// Parameters come in the body only: a token in a URL lands in logs
	// and histories, and one in both places would leave the choice to
	// guesswork (RFC 6749 §3.1 refuses a parameter given twice). Refused
	// before the body is read.
	if r.URL.RawQuery != "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "the parameters go in the form body, not in the query string"})
		return "", false
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.maxBody)
	// Media types are case-insensitive (RFC 9110 §8.3.1).
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "the body must be application/x-www-form-urlencoded"})
		return "", false
	}
	if err := r.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "invalid_request", "error_description": "the request body is too large"})
			return "", false
		}
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "the form could not be parsed"})
		return "", false
	}
	// RFC 6749 §3.1: a parameter is not sent twice; which one a proxy
	// before keyward read is anyone's guess. Only a known name is echoed:
	// another may be a secret sent by mistake.
	for name, vs := range r.PostForm {
		if len(vs) > 1 {
			what := "a parameter"
			if name == "token" || name == "token_type_hint" {
				what = "the parameter " + strconv.Quote(name)
			}
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": what + " is given more than once"})
			return "", false
		}
	}
	tok := r.PostForm.Get("token")
	if tok == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "the token parameter is required"})
		return "", false
	}
	return tok, true
}
