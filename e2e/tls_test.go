package e2e

import (
	"crypto/tls"
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
