package main

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestSecureCookies(t *testing.T) {
	tests := []struct {
		name, addr, public, cert string
		want                     bool
	}{
		{"LoopbackAddr", "127.0.0.1:8080", "http://keyward.internal:8080", "", true},
		{"ContainerLocalhost", "0.0.0.0:8080", "http://localhost:8080", "", true},
		{"ContainerLoopbackIP", "0.0.0.0:8080", "http://127.0.0.1:8080", "", true},
		{"ContainerLoopbackIPv6", "[::]:8080", "http://[::1]:8080", "", true},
		{"SubdomainOfLocalhost", "0.0.0.0:8080", "http://keyward.localhost:8080", "", true},
		{"TLSProxy", "0.0.0.0:8080", "https://keyward.example.com", "", true},
		{"TLS", "0.0.0.0:8443", "http://keyward.example.com", "cert.pem", true},
		{"ErrPlainHTTP", "0.0.0.0:8080", "http://keyward.example.com", "", false},
		{"ErrLANAddress", "0.0.0.0:8080", "http://192.168.1.10:8080", "", false},
		{"ErrLocalhostLookalike", "0.0.0.0:8080", "http://localhost.example.com", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			public, _ := url.Parse(tt.public)
			cfg := serveConfig{Addr: tt.addr}
			cfg.TLSCert = tt.cert
			if got := secureCookies(cfg, public); got != tt.want {
				t.Errorf("secureCookies(%s, %s) = %v, want %v", tt.addr, tt.public, got, tt.want)
			}
		})
	}
}

// TestCookieWarning: serve warns of a public URL that the dashboard's
// cookies cannot work at: not Secure, or Secure (a loopback listener) at a
// plain http URL of another host, which browsers keep no Secure cookie from.
func TestCookieWarning(t *testing.T) {
	for _, tt := range []struct{ addr, public, cert, want string }{
		{"127.0.0.1:8080", "http://localhost:8080", "", ""},
		{"127.0.0.1:8080", "https://keyward.example.com", "", ""},
		{"0.0.0.0:8443", "http://keyward.example.com", "cert.pem", ""},
		{"127.0.0.1:8080", "http://keyward.localhost:8080", "", ""},
		{"127.0.0.1:8080", "http://keyward.internal:8080", "", "--public-url is plain http at a host other than this machine"},
		{"0.0.0.0:8080", "http://keyward.example.com", "", "dashboard cookies are not Secure"},
	} {
		public, _ := url.Parse(tt.public)
		cfg := serveConfig{Addr: tt.addr}
		cfg.TLSCert = tt.cert
		got := cookieWarning(cfg, public)
		if tt.want == "" && got != "" || !strings.HasPrefix(got, tt.want) {
			t.Errorf("cookieWarning(%s, %s, %q) = %q, want %q...", tt.addr, tt.public, tt.cert, got, tt.want)
		}
	}
}

// TestWithDeadline: each API and dashboard request runs under a deadline
// below the server's write timeout, so that a hung store still gets its
// caller an answer.
func TestWithDeadline(t *testing.T) {
	var left time.Duration
	h := withDeadline(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, ok := r.Context().Deadline()
		if !ok {
			t.Error("no deadline")
		}
		left = time.Until(d)
	}), requestTimeout)
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	if left <= requestTimeout-time.Second || left > requestTimeout {
		t.Errorf("deadline in %v, want about %v", left, requestTimeout)
	}
	if requestTimeout >= 30*time.Second {
		t.Errorf("requestTimeout %v is not below the server's WriteTimeout", requestTimeout)
	}
	// But a verification, whose store lookup has its own bound.
	var has bool
	h = withDeadline(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, has = r.Context().Deadline()
	}), requestTimeout)
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/v1/verify", nil))
	if has {
		t.Error("POST /v1/verify runs under the request deadline, which costs it a tenth of its throughput")
	}
}
