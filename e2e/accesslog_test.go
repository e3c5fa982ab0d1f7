package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// logKeyRE finds the keys of a text log line (key=value, value quoted or
// not).
var logKeyRE = regexp.MustCompile(`(?:^| )([a-z_]+)=("(?:[^"\\]|\\.)*"|\S*)`)

// TestAccessLogFields reads back the access-log lines of the API, the
// dashboard and the gateway, and of a request the gateway's own server
// refuses, and checks that the same thing goes under the same name in each:
// client_ip for the client's address (after trusted proxies), peer_ip for
// the connection's where nothing else is known, duration for the time
// taken.
func TestAccessLogFields(t *testing.T) {
	file := filepath.Join(t.TempDir(), "gateway.yaml")
	config := `listen: 127.0.0.1:0
workspace: default
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
	gw := gatewayURL(t, srv)

	for _, u := range []string{srv.URL + "/healthz", srv.URL + "/signin", gw + "/public/a"} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	c, err := net.Dial("tcp", strings.TrimPrefix(gw, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /public/b HTTP/1.1\r\n\r\n") // no Host: refused
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	want := map[string]struct{ has, hasNot []string }{
		"request":                 {[]string{"request_id", "method", "path", "status", "duration", "client_ip"}, []string{"remote_ip", "ip", "peer_ip", "duration_ms"}},
		"dashboard request":       {[]string{"request_id", "method", "path", "status", "duration", "client_ip"}, []string{"remote_ip", "ip", "peer_ip", "duration_ms"}},
		"gateway request":         {[]string{"request_id", "method", "path", "status", "duration", "client_ip", "route"}, []string{"remote_ip", "ip", "peer_ip", "duration_ms"}},
		"gateway request refused": {[]string{"request_id", "status", "peer_ip", "refused"}, []string{"client_ip", "remote_ip", "ip"}},
	}
	lines := map[string]map[string]string{}
	deadline := time.Now().Add(10 * time.Second)
	for len(lines) < len(want) && time.Now().Before(deadline) {
		for _, l := range strings.Split(srv.log.String(), "\n") {
			kv := map[string]string{}
			for _, m := range logKeyRE.FindAllStringSubmatch(l, -1) {
				kv[m[1]] = strings.Trim(m[2], `"`)
			}
			if _, ok := want[kv["msg"]]; ok {
				lines[kv["msg"]] = kv
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	for msg, w := range want {
		kv := lines[msg]
		if kv == nil {
			t.Errorf("no %q line in the log:\n%s", msg, srv.log)
			continue
		}
		for _, k := range w.has {
			if _, ok := kv[k]; !ok {
				t.Errorf("%q line %v: no %s", msg, kv, k)
			}
		}
		for _, k := range w.hasNot {
			if _, ok := kv[k]; ok {
				t.Errorf("%q line %v: has %s", msg, kv, k)
			}
		}
		if ip := kv["client_ip"] + kv["peer_ip"]; ip != "127.0.0.1" {
			t.Errorf("%q line %v: address %q, want 127.0.0.1", msg, kv, ip)
		}
		if !strings.HasPrefix(kv["request_id"], "req_") {
			t.Errorf("%q line %v: request_id %q", msg, kv, kv["request_id"])
		}
	}
}
