package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestTrustedProxies: behind a proxy named with --trusted-proxies, the
// API (and the dashboard, on the same listener) takes the client's
// address from X-Forwarded-For, as audit records show; without the flag,
// or from another address, the header is not believed.
func TestTrustedProxies(t *testing.T) {
	st := sqliteStore(t)
	root := initRoot(t, st)
	for _, tc := range []struct {
		name, flag, want string
	}{
		{"trusted", "127.0.0.0/8", "198.51.100.7"},
		{"not named", "", "127.0.0.1"},
		{"another proxy", "10.0.0.0/8", "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var args []string
			if tc.flag != "" {
				args = []string{"--trusted-proxies", tc.flag}
			}
			srv := startServer(t, st, args...)
			req, _ := http.NewRequest("POST", srv.URL+"/v1/tokens", strings.NewReader(`{"name":"via proxy `+tc.name+`"}`))
			req.Header.Set("Authorization", "Bearer "+root)
			req.Header.Set("Content-Type", "application/json")
			// A client-written entry, then the proxy's.
			req.Header.Set("X-Forwarded-For", "6.6.6.6, 198.51.100.7")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var tok struct{ ID string }
			json.NewDecoder(res.Body).Decode(&tok)
			res.Body.Close()
			if res.StatusCode != http.StatusCreated || tok.ID == "" {
				t.Fatalf("create: %d", res.StatusCode)
			}
			req, _ = http.NewRequest("GET", srv.URL+"/v1/audit?action=token.create&target="+tok.ID, nil)
			req.Header.Set("Authorization", "Bearer "+root)
			res, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(res.Body)
			res.Body.Close()
			var list struct {
				Items []struct{ Target, IP string }
			}
			if err := json.Unmarshal(raw, &list); err != nil || res.StatusCode != 200 {
				t.Fatalf("audit: %d %s", res.StatusCode, raw)
			}
			found := false
			for _, ev := range list.Items {
				if ev.Target == tok.ID {
					found = true
					if ev.IP != tc.want {
						t.Errorf("audit ip %q, want %q", ev.IP, tc.want)
					}
				}
			}
			if !found {
				t.Fatalf("no audit event of %s: %s", tok.ID, raw)
			}
		})
	}
	_, errOut, code := cli(t, "", st.env, append([]string{"serve", "--trusted-proxies", "10.0.0.0/8,nonsense"}, st.args...)...)
	if code != 2 || !strings.Contains(errOut, "--trusted-proxies") {
		t.Errorf("a bad --trusted-proxies: exit %d, %s", code, errOut)
	}
}
