package e2e

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// TestDashboardMetrics signs in to the real server's dashboard, once with
// a wrong password and once with the right one, and reads the sign-ins
// back from /metrics by route pattern and status: failed sign-ins are
// what an operator alerts on. No path, e-mail or password a client sent
// becomes a label.
func TestDashboardMetrics(t *testing.T) {
	st := sqliteStore(t)
	initRoot(t, st)
	userCreate(t, st, "ann@example.com", "correct horse battery staple")
	srv := startServer(t, st)

	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	cookies := map[string]string{}
	send := func(method, path string, form url.Values) (int, string) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequest(method, srv.URL+path, body)
		if err != nil {
			t.Fatal(err)
		}
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		// By hand: a cookie jar keeps Secure cookies from http://.
		for name, value := range cookies {
			req.AddCookie(&http.Cookie{Name: name, Value: value})
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		for _, c := range resp.Cookies() {
			cookies[c.Name] = c.Value
		}
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	csrfRE := regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	signIn := func(password string, want int) {
		t.Helper()
		status, page := send("GET", "/signin", nil)
		m := csrfRE.FindStringSubmatch(page)
		if status != 200 || m == nil {
			t.Fatalf("GET /signin: %d, no CSRF token:\n%s", status, page)
		}
		if status, page = send("POST", "/signin", url.Values{"csrf": {m[1]}, "email": {"ann@example.com"}, "password": {password}}); status != want {
			t.Fatalf("POST /signin: %d, want %d:\n%s", status, want, page)
		}
	}
	signIn("wrong horse battery staple", http.StatusUnauthorized)
	signIn("correct horse battery staple", http.StatusSeeOther)
	if status, _ := send("GET", "/no/such/page/ann@example.com", nil); status != http.StatusNotFound {
		t.Fatalf("GET of an unknown page: %d, want 404", status)
	}

	status, metrics := send("GET", "/metrics", nil)
	if status != 200 {
		t.Fatalf("GET /metrics: %d", status)
	}
	for _, want := range []string{
		`keyward_dashboard_requests_total{code="200",route="GET /signin"} 2`,
		`keyward_dashboard_requests_total{code="401",route="POST /signin"} 1`,
		`keyward_dashboard_requests_total{code="303",route="POST /signin"} 1`,
		`keyward_dashboard_requests_total{code="404",route="unmatched"} 1`,
		`keyward_dashboard_request_duration_seconds_count{route="POST /signin"} 2`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for _, never := range []string{"ann@example.com", "horse", "/no/such"} {
		if strings.Contains(metrics, never) {
			t.Errorf("/metrics holds %q", never)
		}
	}
}
