package realip

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestClient(t *testing.T) {
	p, err := Parse([]string{"10.0.0.0/8", " 192.0.2.1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, remote string
		xff          []string
		want         string
		trusted      bool
	}{
		{"untrusted peer's header ignored", "203.0.113.9", []string{"198.51.100.1"}, "203.0.113.9", false},
		{"one trusted proxy", "10.1.1.1", []string{"198.51.100.1"}, "198.51.100.1", true},
		{"client-written entries left of the proxy's", "10.1.1.1", []string{"6.6.6.6, 198.51.100.1"}, "198.51.100.1", true},
		{"chain of trusted proxies", "10.1.1.1", []string{"198.51.100.1, 192.0.2.1", "10.2.2.2"}, "198.51.100.1", true},
		{"garbage stops at the last believed hop", "10.1.1.1", []string{"198.51.100.1, junk, 10.3.3.3"}, "10.3.3.3", true},
		{"no header", "10.1.1.1", nil, "10.1.1.1", true},
		{"mapped address", "10.1.1.1", []string{"::ffff:198.51.100.1"}, "198.51.100.1", true},
		{"IPv6 client", "192.0.2.1", []string{"2001:db8::1"}, "2001:db8::1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ip, trusted := p.Client(netip.MustParseAddr(tc.remote), tc.xff)
			if ip.String() != tc.want || trusted != tc.trusted {
				t.Errorf("Client = %v, %v; want %s, %v", ip, trusted, tc.want, tc.trusted)
			}
		})
	}
	if _, err := Parse([]string{"10.0.0.0/8", "nonsense"}); err == nil {
		t.Error("Parse took an entry that is no CIDR")
	}
}

func TestParseProxy(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"10.1.2.3/8", "10.0.0.0/8", ""},
		{" 192.0.2.1 ", "192.0.2.1/32", ""},
		{"2001:db8::1", "2001:db8::1/128", ""},
		{"0.0.0.0/0", "", "trusts every address"},
		{"::/0", "", "trusts every address"},
		{"10.0.0.0/33", "", "netip.ParsePrefix"},
		{"fe80::1%eth0", "", "invalid CIDR"},
		{"", "", "invalid CIDR"},
	} {
		pf, err := ParseProxy(tc.in)
		switch {
		case tc.err == "" && (err != nil || pf.String() != tc.want):
			t.Errorf("ParseProxy(%q) = %v, %v; want %s", tc.in, pf, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseProxy(%q) = %v, %v; want an error with %q", tc.in, pf, err, tc.err)
		}
	}
}

func TestHandler(t *testing.T) {
	var got string
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.RemoteAddr })
	p, _ := Parse([]string{"127.0.0.1"})
	h := p.Handler(next)
	for _, tc := range []struct{ remote, xff, want string }{
		{"127.0.0.1:5555", "198.51.100.1", "198.51.100.1:0"},
		{"127.0.0.1:5555", "", "127.0.0.1:5555"},
		{"203.0.113.9:5555", "198.51.100.1", "203.0.113.9:5555"},
		{"[2001:db8::5]:5555", "198.51.100.1", "[2001:db8::5]:5555"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
		if got != tc.want {
			t.Errorf("from %s with %q: RemoteAddr %q, want %q", tc.remote, tc.xff, got, tc.want)
		}
		if r.RemoteAddr != tc.remote {
			t.Errorf("the caller's request was changed: %q", r.RemoteAddr)
		}
	}
	if Proxies(nil).Handler(next) == nil {
		t.Error("no handler without proxies")
	}
}
