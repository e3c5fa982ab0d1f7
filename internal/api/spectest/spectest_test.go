package spectest

import (
	"net/http"
	"strings"
	"testing"
)

// TestCheckDetectsDrift makes sure that the check catches what it is
// for.
func TestCheckDetectsDrift(t *testing.T) {
	req, _ := http.NewRequest("GET", "http://x/v1/tokens/tok_1", nil)
	js := http.Header{"Content-Type": {"application/json"}}
	problem := http.Header{"Content-Type": {"application/problem+json"}}
	for _, tc := range []struct {
		name   string
		status int
		header http.Header
		body   string
		want   string
	}{
		{"undocumented status", 418, problem, `{}`, "status 418 is not documented"},
		{"wrong type", 200, js, `{"id": 5}`, "does not match"},
		{"unknown state", 200, js, `{"id": "tok_1", "name": "n", "state": "sleeping"}`, "does not match"},
		{"bad date-time", 404, problem, `{"type": "about:blank", "title": "Not Found", "status": "404", "code": "not_found"}`, "does not match"},
		{"media type", 200, http.Header{"Content-Type": {"text/html"}}, `<p>`, "media type text/html is not documented"},
	} {
		if err := Check(req, tc.status, tc.header, []byte(tc.body)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}
