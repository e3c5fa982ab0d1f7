// Package realip finds the address of a request's client when proxies
// that the operator trusts stand in front of the server and name it in
// X-Forwarded-For.
package realip

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/keyward/keyward"
)

// Proxies are the networks whose X-Forwarded-For is believed.
type Proxies []netip.Prefix

// Parse parses a list of proxies, each as ParseProxy does.
func Parse(list []string) (Proxies, error) {
	var p Proxies
	for _, s := range list {
		pf, err := ParseProxy(s)
		if err != nil {
			return nil, err
		}
		p = append(p, pf)
	}
	return p, nil
}

// ParseProxy parses one trusted proxy: a CIDR or an IP address (one host),
// as keyward.ParseCIDR does. A prefix of every address (0.0.0.0/0, ::/0)
// is refused: every client could then name its own address, and the
// checks that depend on it (allowlists, throttling) would believe it.
func ParseProxy(s string) (netip.Prefix, error) {
	pf, err := keyward.ParseCIDR(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, err
	}
	if pf.Bits() == 0 {
		return netip.Prefix{}, fmt.Errorf("%s trusts every address; name the proxies' own networks", pf)
	}
	return pf, nil
}

// Trusts reports whether a is the address of a trusted proxy.
func (p Proxies) Trusts(a netip.Addr) bool {
	for _, pf := range p {
		if pf.Contains(a) {
			return true
		}
	}
	return false
}

// Client returns the client's address: remote, the connection's, or, when
// remote is a trusted proxy, the rightmost address of the X-Forwarded-For
// values xff that is not a trusted proxy (each proxy appends the address
// it was reached from; what a client wrote itself stands to the left, and
// is never believed). An entry that is not an address stops the walk at
// the last hop believed. trusted reports whether remote is a trusted
// proxy.
func (p Proxies) Client(remote netip.Addr, xff []string) (ip netip.Addr, trusted bool) {
	ip = remote
	if len(p) == 0 || !p.Trusts(ip) {
		return ip, false
	}
	for i := len(xff) - 1; i >= 0; i-- {
		hops := xff[i]
		for hops != "" {
			var hop string
			if j := strings.LastIndexByte(hops, ','); j >= 0 {
				hops, hop = hops[:j], hops[j+1:]
			} else {
				hops, hop = "", hops
			}
			a, err := netip.ParseAddr(strings.TrimSpace(hop))
			if err != nil {
				return ip, true // garbage before a trusted hop: believe no further
			}
			ip = a.Unmap()
			if !p.Trusts(ip) {
				return ip, true
			}
		}
	}
	return ip, true
}

// Handler returns next, given requests whose RemoteAddr names the client
// (see Client) instead of a trusted proxy, so that what reads RemoteAddr
// (logs, throttles, audit records) sees the client. Without proxies it is
// next itself.
func (p Proxies) Handler(next http.Handler) http.Handler {
	if len(p) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err == nil {
			if ip, trusted := p.Client(ap.Addr().Unmap(), r.Header.Values("X-Forwarded-For")); trusted && ip != ap.Addr().Unmap() {
				r = r.WithContext(r.Context()) // a copy
				r.RemoteAddr = netip.AddrPortFrom(ip, 0).String()
			}
		}
		next.ServeHTTP(w, r)
	})
}
