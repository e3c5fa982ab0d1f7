package e2e

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestTLS serves over TLS with --tls-cert and --tls-key and checks that a
// client trusting the certificate gets through, and plain HTTP does not.
func TestTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	srv := startServer(t, sqliteStore(t), "--tls-cert", certFile, "--tls-key", keyFile)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	url := strings.Replace(srv.URL, "http://", "https://", 1)
	resp, err := hc.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("status %d over TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(srv.URL + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP answered 200 on the TLS listener")
		}
	}
}

// TestTLSHTTP2 checks that the TLS listener speaks HTTP/2 to a client that
// offers it (the API, the verify path and the dashboard alike) and still
// HTTP/1.1 to one that does not.
func TestTLSHTTP2(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	st := sqliteStore(t)
	srv := startServer(t, st, "--tls-cert", certFile, "--tls-key", keyFile)
	root := initRoot(t, st)
	base := strings.Replace(srv.URL, "http://", "https://", 1)
	h2 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true,
	}}
	h1 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}},
	}}
	for _, tc := range []struct {
		name, method, path, body string
		auth                     bool
		status                   int
	}{
		{"Healthz", http.MethodGet, "/healthz", "", false, http.StatusOK},
		{"ListTokens", http.MethodGet, "/v1/tokens", "", true, http.StatusOK},
		{"Verify", http.MethodPost, "/v1/verify", `{"token":"kw_notatoken"}`, true, http.StatusOK},
		{"NoCredential", http.MethodGet, "/v1/tokens", "", false, http.StatusUnauthorized},
		{"SignInPage", http.MethodGet, "/signin", "", false, http.StatusOK},
	} {
		for _, c := range []struct {
			proto  string
			client *http.Client
		}{{"HTTP/2.0", h2}, {"HTTP/1.1", h1}} {
			t.Run(tc.name+"/"+c.proto, func(t *testing.T) {
				req, err := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
				if err != nil {
					t.Fatal(err)
				}
				if tc.body != "" {
					req.Header.Set("Content-Type", "application/json")
				}
				if tc.auth {
					req.Header.Set("Authorization", "Bearer "+root)
				}
				resp, err := c.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.Proto != c.proto || resp.StatusCode != tc.status {
					t.Fatalf("%s %s: %s %d, want %s %d", tc.method, tc.path, resp.Proto, resp.StatusCode, c.proto, tc.status)
				}
			})
		}
	}
}

// TestTLSHTTP2HeaderTimeout: an HTTP/2 client of the TLS listener that
// sends the preface and then no request is cut off after the header
// timeout (10 s), as an HTTP/1 client that sends no header is, not held
// until the idle timeout (2 minutes): net/http applies ReadHeaderTimeout
// to HTTP/1 alone.
func TestTLSHTTP2HeaderTimeout(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	srv := startServer(t, sqliteStore(t), "--tls-cert", certFile, "--tls-key", keyFile)
	c, err := tls.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"), &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q, want h2", p)
	}
	// The preface and an empty SETTINGS frame, then nothing.
	start := time.Now()
	io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
	c.SetReadDeadline(start.Add(20 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the connection was still open after 20 s (%d bytes read)", n)
	}
	if took := time.Since(start); took < 9*time.Second {
		t.Errorf("cut off after %v, before the header timeout", took)
	}
}
