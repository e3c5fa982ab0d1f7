package gateway

import (
	"net"
	"net/netip"
	"slices"
	"strings"
)

// router finds the route of a request: the longest path prefix on a
// segment boundary, host-specific routes before host-less ones of the same
// prefix, then the route whose methods include the request's (for HEAD,
// else the one that takes GET).
type router struct {
	routes []*route
	fold   bool // Config.CaseInsensitivePaths
}

// match returns the route for host, path and method. When routes match the
// path but none takes the method, it returns nil and the methods they take
// (allow); when no route matches the path, nil and nil.
func (rr *router) match(host, path, method string) (rt *route, allow []string) {
	host = normalizeHost(host)
	best := -1
	for _, r := range rr.routes {
		if r.cfg.Host != "" && r.cfg.Host != host {
			continue
		}
		if l := len(r.cfg.PathPrefix); l > best && prefixMatch(r.cfg.PathPrefix, path, rr.fold) {
			best = l
		}
	}
	if best < 0 {
		return nil, nil
	}
	// Host-specific routes are tried first (pass 0), then host-less ones.
	for pass := 0; pass < 2; pass++ {
		for _, r := range rr.routes {
			if len(r.cfg.PathPrefix) != best || !prefixMatch(r.cfg.PathPrefix, path, rr.fold) {
				continue
			}
			if (pass == 0) != (r.cfg.Host != "") || (r.cfg.Host != "" && r.cfg.Host != host) {
				continue
			}
			if r.cfg.allows(method) {
				return r, nil
			}
			for _, m := range r.cfg.Methods {
				if !slices.Contains(allow, m) {
					allow = append(allow, m)
				}
			}
		}
	}
	if slices.Contains(allow, "GET") {
		// A route that takes GET takes HEAD too (RFC 9110 §9.1), unless
		// another route of the prefix names HEAD itself.
		if method == "HEAD" {
			return rr.match(host, path, "GET")
		}
		if !slices.Contains(allow, "HEAD") {
			allow = append(allow, "HEAD")
		}
	}
	return nil, allow
}

// prefixMatch reports whether path is prefix or lies under it on a segment
// boundary; with fold, without regard to ASCII case.
func prefixMatch(prefix, path string, fold bool) bool {
	if prefix == "/" {
		return strings.HasPrefix(path, "/")
	}
	n := len(prefix)
	return hasPathPrefix(path, prefix, fold) && (len(path) == n || path[n] == '/')
}

// hasPathPrefix reports whether s starts with prefix; with fold, without
// regard to ASCII case.
func hasPathPrefix(s, prefix string, fold bool) bool {
	n := len(prefix)
	return len(s) >= n && (s[:n] == prefix || fold && asciiEqualFold(s[:n], prefix))
}

// asciiLower returns s with its ASCII upper-case letters in lower case, as
// asciiEqualFold compares.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// asciiEqualFold reports whether a and b are equal but for the case of
// ASCII letters (as Express and IIS route; not Unicode's folding, under
// which "K", the Kelvin sign, equals "k").
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// normalizeHost lower-cases a Host header and drops its port; an IPv6
// address it writes in its one canonical form (RFC 5952), since one
// address has many: [2001:db8::1] and 2001:db8:0::1 are one host.
func normalizeHost(h string) string {
	if strings.IndexByte(h, ':') >= 0 {
		if hh, _, err := net.SplitHostPort(h); err == nil {
			h = hh
		}
		h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
		if strings.IndexByte(h, ':') >= 0 { // not a name nor IPv4
			if a, err := netip.ParseAddr(h); err == nil && a.Zone() == "" {
				// Clients write it so ([::1]:8080): h as it is, then,
				// without allocating on each request.
				var buf [64]byte
				if c := a.AppendTo(buf[:0]); string(c) == h {
					return h
				}
				return a.String()
			}
		}
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}
