package client

import (
	"bytes"
	"context"
	"io"
	"iter"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// pageOf is a list page of the given raw items.
func pageOf(next string, items ...string) string {
	s := `{"items":[` + strings.Join(items, ",") + `]`
	if next != "" {
		s += `,"next_cursor":"` + next + `"`
	}
	return s + "}"
}

// TestListIterators checks that every paging helper asks for each page
// with its filters and the cursor of the page before, and yields every
// item of every page.
func TestListIterators(t *testing.T) {
	from := time.Date(2026, 3, 1, 0, 0, 0, 500_000_000, time.UTC)
	to := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name      string
		item      func(id string) string
		walk      func(c *Client) ([]string, error)
		wantPath  string
		wantQuery []string // of the first and second request
	}{
		{
			name: "Workspaces",
			item: func(id string) string {
				return `{"id":"` + id + `","name":"n","token_prefix":"kw","created_at":"2026-01-01T00:00:00Z"}`
			},
			walk: func(c *Client) (ids []string, err error) {
				for w, err := range c.Workspaces(context.Background(), ListOptions{Limit: 2}) {
					if err != nil {
						return nil, err
					}
					ids = append(ids, w.ID)
				}
				return ids, nil
			},
			wantPath:  "/v1/workspaces",
			wantQuery: []string{"limit=2", "cursor=c1&limit=2"},
		},
		{
			name: "AuditEvents",
			item: func(id string) string {
				return `{"id":"` + id + `","time":"2026-01-01T00:00:00Z","action":"token.revoke","actor":{"type":"token","id":"tok_a"},"target":"tok_t","ip":"","user_agent":"","request_id":"","changes":null}`
			},
			walk: func(c *Client) (ids []string, err error) {
				f := AuditFilter{Actor: "tok_a", Action: "token.*", Target: "tok_t", From: from, To: to, ListOptions: ListOptions{Limit: 2}}
				for e, err := range c.AuditEvents(context.Background(), f) {
					if err != nil {
						return nil, err
					}
					ids = append(ids, e.ID)
				}
				return ids, nil
			},
			wantPath: "/v1/audit",
			wantQuery: []string{
				"action=token.%2A&actor=tok_a&from=2026-03-01T00%3A00%3A00.5Z&limit=2&target=tok_t&to=2026-03-02T00%3A00%3A00Z",
				"action=token.%2A&actor=tok_a&cursor=c1&from=2026-03-01T00%3A00%3A00.5Z&limit=2&target=tok_t&to=2026-03-02T00%3A00%3A00Z",
			},
		},
		{
			name: "UsageEvents",
			item: func(id string) string {
				return `{"id":"` + id + `","time":"2026-01-01T00:00:00Z","token_id":"","ip":"","method":"POST","route":"/v1/verify","path":"","outcome":"NOT_FOUND","status":200,"latency_ms":0.1}`
			},
			walk: func(c *Client) (ids []string, err error) {
				f := UsageEventFilter{Outcome: "NOT_FOUND", From: from, ListOptions: ListOptions{Limit: 2}}
				for e, err := range c.UsageEvents(context.Background(), f) {
					if err != nil {
						return nil, err
					}
					ids = append(ids, e.ID)
				}
				return ids, nil
			},
			wantPath:  "/v1/usage/events",
			wantQuery: []string{"from=2026-03-01T00%3A00%3A00.5Z&limit=2&outcome=NOT_FOUND", "cursor=c1&from=2026-03-01T00%3A00%3A00.5Z&limit=2&outcome=NOT_FOUND"},
		},
		{
			name: "DormantTokens",
			item: func(id string) string { return `{"id":"` + id + `","name":"n","scopes":[],"allowed_cidrs":[]}` },
			walk: func(c *Client) (ids []string, err error) {
				for tok, err := range c.DormantTokens(context.Background(), DormantFilter{Days: 30, ListOptions: ListOptions{Limit: 2}}) {
					if err != nil {
						return nil, err
					}
					ids = append(ids, tok.ID)
				}
				return ids, nil
			},
			wantPath:  "/v1/reports/dormant",
			wantQuery: []string{"days=30&limit=2", "cursor=c1&days=30&limit=2"},
		},
		{
			name: "TokenReport",
			item: func(id string) string {
				return `{"id":"` + id + `","name":"n","state":"active","subject":"","scopes":[],"created_at":"2026-01-01T00:00:00Z","created_by":"","age_days":3,"expires_at":null,"last_used_at":null,"last_used_ip":""}`
			},
			walk: func(c *Client) (ids []string, err error) {
				for it, err := range c.TokenReport(context.Background(), ListOptions{Limit: 2}) {
					if err != nil {
						return nil, err
					}
					if it.AgeDays != 3 || it.State != "active" {
						t.Errorf("item = %+v", it)
					}
					ids = append(ids, it.ID)
				}
				return ids, nil
			},
			wantPath:  "/v1/reports/tokens",
			wantQuery: []string{"limit=2", "cursor=c1&limit=2"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, seen := newTestClient(t,
				reply{Status: 200, ContentType: "application/json", Body: pageOf("c1", tc.item("a"), tc.item("b"))},
				reply{Status: 200, ContentType: "application/json", Body: pageOf("", tc.item("c"))},
			)
			ids, err := tc.walk(c)
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{"a", "b", "c"}; !reflect.DeepEqual(ids, want) {
				t.Errorf("ids = %v, want %v", ids, want)
			}
			if len(*seen) != 2 {
				t.Fatalf("requests = %d, want 2", len(*seen))
			}
			for i, r := range *seen {
				if r.Method != "GET" || r.Path != tc.wantPath || r.RawQuery != tc.wantQuery[i] {
					t.Errorf("request %d = %s %s?%s, want GET %s?%s", i, r.Method, r.Path, r.RawQuery, tc.wantPath, tc.wantQuery[i])
				}
			}
		})
	}
}

func TestWriteTokenReportCSV(t *testing.T) {
	const file = "id,name,state,subject,scopes,created_at,created_by,age_days,expires_at,last_used_at,last_used_ip\r\ntok_1,'=SUM(A1),active,,,2026-01-01T00:00:00Z,,3,,,\r\n"
	t.Run("OK", func(t *testing.T) {
		c, seen := newTestClient(t, reply{Status: 200, ContentType: "text/csv; charset=utf-8", Body: file})
		var b bytes.Buffer
		if err := c.WriteTokenReportCSV(context.Background(), &b); err != nil {
			t.Fatal(err)
		}
		if b.String() != file {
			t.Errorf("file = %q", b.String())
		}
		r := (*seen)[0]
		if r.Path != "/v1/reports/tokens" || r.RawQuery != "format=csv" || r.Header.Get("Authorization") != "Bearer "+testToken {
			t.Errorf("request = %s?%s", r.Path, r.RawQuery)
		}
	})
	t.Run("ErrForbidden", func(t *testing.T) {
		c, _ := newTestClient(t, reply{Status: 403, ContentType: "application/problem+json", Body: `{"title":"Forbidden","status":403,"code":"forbidden","detail":"no"}`})
		var b bytes.Buffer
		if err := c.WriteTokenReportCSV(context.Background(), &b); !IsForbidden(err) || b.Len() != 0 {
			t.Errorf("err = %v, wrote %q", err, b.String())
		}
	})
	t.Run("ErrNotCSV", func(t *testing.T) {
		c, _ := newTestClient(t, reply{Status: 200, ContentType: "text/html", Body: "<html>login</html>"})
		var b bytes.Buffer
		if err := c.WriteTokenReportCSV(context.Background(), &b); err == nil || b.Len() != 0 {
			t.Errorf("err = %v, wrote %q", err, b.String())
		}
	})
}

func TestUsage(t *testing.T) {
	const body = `{"token_id":"tok_1","granularity":"minute","from":"2026-11-22T10:00:00Z","to":"2026-11-22T10:02:00Z",
		"total":3,"by_outcome":{"VALID":2,"RATE_LIMITED":1},"by_route":{"/v1/verify":3},"by_status":{"200":3},
		"points":[{"time":"2026-11-22T10:00:00Z","total":3,"by_outcome":{"VALID":2,"RATE_LIMITED":1}},{"time":"2026-11-22T10:01:00Z","total":0,"by_outcome":{}}],
		"top_tokens":[{"token_id":"tok_1","name":"n","total":3,"valid":2,"failed":1}]}`
	c, seen := newTestClient(t, reply{Status: 200, ContentType: "application/json", Body: body})
	// A "to" that ends within a second: cut to the second, the server
	// would widen it to one bucket fewer.
	q := UsageQuery{Granularity: "minute", From: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC), To: time.Date(2026, 11, 22, 10, 1, 0, 250_000_000, time.UTC), Top: 3}
	u, err := c.TokenUsage(context.Background(), "tok_1", q)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Usage(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	want := "from=2026-11-22T10%3A00%3A00Z&granularity=minute&to=2026-11-22T10%3A01%3A00.25Z&top=3"
	if r := (*seen)[0]; r.Path != "/v1/tokens/tok_1/usage" || r.RawQuery != want {
		t.Errorf("request = %s?%s, want ?%s", r.Path, r.RawQuery, want)
	}
	if r := (*seen)[1]; r.Path != "/v1/usage" || r.RawQuery != want {
		t.Errorf("request = %s?%s, want ?%s", r.Path, r.RawQuery, want)
	}
	if u.Total != 3 || u.ByOutcome["RATE_LIMITED"] != 1 || u.ByStatus["200"] != 3 || len(u.Points) != 2 || u.Points[0].ByOutcome["VALID"] != 2 ||
		len(u.TopTokens) != 1 || u.TopTokens[0].Failed != 1 || u.TokenID != "tok_1" || u.Granularity != "minute" {
		t.Errorf("usage = %+v", u)
	}
}

// TestIteratorsRangeAgain checks that each paging iterator starts again
// from its first cursor on every range, and that two ranges of one
// iterator may run at once (go test -race).
func TestIteratorsRangeAgain(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Query().Get("cursor") {
		case "":
			io.WriteString(w, pageOf("c1", `{"id":"a"}`, `{"id":"b"}`))
		case "c1":
			io.WriteString(w, pageOf("", `{"id":"c"}`))
		default:
			w.WriteHeader(http.StatusBadRequest)
		}
	}))
	defer srv.Close()
	c, err := New(srv.URL, testToken)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		ids  func() ([]string, error) // walks one iterator, made once
	}{
		{"Tokens", walkIDs(c.Tokens(ctx, TokenFilter{Limit: 2}), func(v Token) string { return v.ID })},
		{"Workspaces", walkIDs(c.Workspaces(ctx, ListOptions{Limit: 2}), func(v Workspace) string { return v.ID })},
		{"AuditEvents", walkIDs(c.AuditEvents(ctx, AuditFilter{Action: "token.*"}), func(v AuditEvent) string { return v.ID })},
		{"UsageEvents", walkIDs(c.UsageEvents(ctx, UsageEventFilter{}), func(v UsageEvent) string { return v.ID })},
		{"DormantTokens", walkIDs(c.DormantTokens(ctx, DormantFilter{Days: 3}), func(v Token) string { return v.ID })},
		{"TokenReport", walkIDs(c.TokenReport(ctx, ListOptions{}), func(v TokenReportItem) string { return v.ID })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := []string{"a", "b", "c"}
			for i := range 2 {
				ids, err := tc.ids()
				if err != nil || !reflect.DeepEqual(ids, want) {
					t.Fatalf("range %d: ids = %v, %v; want %v", i+1, ids, err, want)
				}
			}
			var wg sync.WaitGroup
			for range 2 {
				wg.Go(func() {
					if ids, err := tc.ids(); err != nil || !reflect.DeepEqual(ids, want) {
						t.Errorf("concurrent range: ids = %v, %v; want %v", ids, err, want)
					}
				})
			}
			wg.Wait()
		})
	}
}

// walkIDs returns a function that ranges over seq and returns the ids of
// its items.
func walkIDs[T any](seq iter.Seq2[T, error], id func(T) string) func() ([]string, error) {
	return func() (ids []string, err error) {
		for v, err := range seq {
			if err != nil {
				return ids, err
			}
			ids = append(ids, id(v))
		}
		return ids, nil
	}
}
