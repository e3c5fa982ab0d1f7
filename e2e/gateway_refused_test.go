package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestGatewayRefusedCounted sends the gateway requests its own server
// refuses before routing (no Host, ambiguous framing, a header too large)
// and reads them back from /metrics under the route "unmatched", as the
// README says: a smuggling probe shows in monitoring, not only in the
// access log.
func TestGatewayRefusedCounted(t *testing.T) {
	file := filepath.Join(t.TempDir(), "gateway.yaml")
	config := `listen: 127.0.0.1:0
workspace: default
server:
  max_header_bytes: 4096
routes:
  - name: public
    path_prefix: /public
    upstreams: [http://127.0.0.1:9]
    auth: none
`
	if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	st := sqliteStore(t)
	initRoot(t, st)
	srv := startServer(t, st, "--gateway-config", file)
	gw := strings.TrimPrefix(gatewayURL(t, srv), "http://")

	send := func(raw string) int {
		t.Helper()
		c, err := net.Dial("tcp", gw)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tt := range []struct {
		raw  string
		want int
	}{
		{"GET /public/a?token=x HTTP/1.1\r\n\r\n", 400},
		{"POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400},
		{"GET /public/a HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 8192) + "\r\n\r\n", 431},
	} {
		if got := send(tt.raw); got != tt.want {
			t.Fatalf("%.40q: status %d, want %d", tt.raw, got, tt.want)
		}
	}

	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`keyward_gateway_requests_total{code="400",route="unmatched"} 2`,
		`keyward_gateway_requests_total{code="431",route="unmatched"} 1`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// The log is written in batches: wait for the lines.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		n := strings.Count(srv.log.String(), `msg="gateway request refused"`)
		if n == 3 {
			break
		}
		if n > 3 || time.Now().After(deadline) {
			t.Fatalf("%d refused lines in the log, want 3:\n%s", n, srv.log)
		}
	}
}
