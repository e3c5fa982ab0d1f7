package client

import (
	"context"
	"fmt"
	"io"
	"iter"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// pages returns an iterator over the items of every page that fetch
// returns, from start on. On an error it yields the error once and stops.
// Each range over it starts again from start, and ranges may run at once:
// fetch must not change what it shares between calls.
func pages[T any](start string, fetch func(cursor string) (*List[T], error)) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		cursor := start
		for {
			page, err := fetch(cursor)
			if err != nil {
				var zero T
				yield(zero, err)
				return
			}
			for _, it := range page.Items {
				if !yield(it, nil) {
					return
				}
			}
			if page.NextCursor == "" || page.NextCursor == cursor {
				return
			}
			cursor = page.NextCursor
		}
	}
}

// Workspaces returns an iterator over every workspace from opts.Cursor on,
// fetching pages of opts.Limit as it goes. On an error it yields the error
// once and stops. It needs keyward:instance.
func (c *Client) Workspaces(ctx context.Context, opts ListOptions) iter.Seq2[Workspace, error] {
	return pages(opts.Cursor, func(cursor string) (*List[Workspace], error) {
		o := opts
		o.Cursor = cursor
		return c.ListWorkspaces(ctx, o)
	})
}

// AuditFilter selects audit events: by Actor (the actor's id, such as a
// management token's tok_...), Action (exact, such as "token.revoke", or
// every action of one object, such as "token.*"), Target (the id of the
// object acted on), From (at or after it) and To (before it); zero fields
// select everything. Limit and Cursor page through the result as in
// ListOptions; give the same filters with the cursor.
type AuditFilter struct {
	Actor    string
	Action   string
	Target   string
	From, To time.Time
	ListOptions
}

func (f AuditFilter) query() url.Values {
	q := f.ListOptions.query()
	for k, v := range map[string]string{"actor": f.Actor, "action": f.Action, "target": f.Target} {
		if v != "" {
			q.Set(k, v)
		}
	}
	setTime(q, "from", f.From)
	setTime(q, "to", f.To)
	return q
}

// setTime sets q's key to t in RFC 3339, to the nanosecond, unless t is
// zero: a range cut to the second would move its bounds.
func setTime(q url.Values, key string, t time.Time) {
	if !t.IsZero() {
		q.Set(key, t.UTC().Format(time.RFC3339Nano))
	}
}

// ListAuditEvents returns one page of the workspace's audit events that f
// selects, newest first. It needs keyward:audit:read.
func (c *Client) ListAuditEvents(ctx context.Context, f AuditFilter) (*List[AuditEvent], error) {
	var out List[AuditEvent]
	if err := c.get(ctx, "/v1/audit", f.query(), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AuditEvents returns an iterator over every audit event that f selects,
// newest first, from f.Cursor on. On an error it yields the error once and
// stops. It needs keyward:audit:read.
func (c *Client) AuditEvents(ctx context.Context, f AuditFilter) iter.Seq2[AuditEvent, error] {
	return pages(f.Cursor, func(cursor string) (*List[AuditEvent], error) {
		g := f
		g.Cursor = cursor
		return c.ListAuditEvents(ctx, g)
	})
}

// UsageEvents returns an iterator over every raw usage event that f
// selects, newest first, from f.Cursor on. On an error it yields the error
// once and stops. It needs keyward:tokens:read.
func (c *Client) UsageEvents(ctx context.Context, f UsageEventFilter) iter.Seq2[UsageEvent, error] {
	return pages(f.Cursor, func(cursor string) (*List[UsageEvent], error) {
		g := f
		g.Cursor = cursor
		return c.ListUsageEvents(ctx, g)
	})
}

// DormantFilter selects the active tokens not used for Days days (the
// server's default 90 when 0; 1 to 3650), never-used tokens included.
// Limit and Cursor page as in ListOptions.
type DormantFilter struct {
	Days int
	ListOptions
}

func (f DormantFilter) query() url.Values {
	q := f.ListOptions.query()
	if f.Days != 0 {
		q.Set("days", strconv.Itoa(f.Days))
	}
	return q
}

// ListDormantTokens returns one page of the dormant-token report
// (GET /v1/reports/dormant), ordered by id. A page may hold fewer than
// Limit items while NextCursor still pages on. It needs
// keyward:tokens:read.
func (c *Client) ListDormantTokens(ctx context.Context, f DormantFilter) (*List[Token], error) {
	var out List[Token]
	if err := c.get(ctx, "/v1/reports/dormant", f.query(), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DormantTokens returns an iterator over every token of the dormant-token
// report, from f.Cursor on. On an error it yields the error once and
// stops. It needs keyward:tokens:read.
func (c *Client) DormantTokens(ctx context.Context, f DormantFilter) iter.Seq2[Token, error] {
	return pages(f.Cursor, func(cursor string) (*List[Token], error) {
		g := f
		g.Cursor = cursor
		return c.ListDormantTokens(ctx, g)
	})
}

// TokenReportItem is one token of the inventory report
// (GET /v1/reports/tokens). AgeDays is the number of whole days since
// CreatedAt; absent times are nil.
type TokenReportItem struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	State      string     `json:"state"`
	Subject    string     `json:"subject"`
	Scopes     []string   `json:"scopes"`
	CreatedAt  time.Time  `json:"created_at"`
	CreatedBy  string     `json:"created_by"`
	AgeDays    int64      `json:"age_days"`
	ExpiresAt  *time.Time `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	LastUsedIP string     `json:"last_used_ip"`
}

// ListTokenReport returns one page of the inventory of every token of the
// workspace, in every state, ordered by id. It needs keyward:tokens:read.
func (c *Client) ListTokenReport(ctx context.Context, opts ListOptions) (*List[TokenReportItem], error) {
	var out List[TokenReportItem]
	if err := c.get(ctx, "/v1/reports/tokens", opts.query(), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// TokenReport returns an iterator over the whole token inventory, from
// opts.Cursor on. On an error it yields the error once and stops. It needs
// keyward:tokens:read.
func (c *Client) TokenReport(ctx context.Context, opts ListOptions) iter.Seq2[TokenReportItem, error] {
	return pages(opts.Cursor, func(cursor string) (*List[TokenReportItem], error) {
		o := opts
		o.Cursor = cursor
		return c.ListTokenReport(ctx, o)
	})
}

// WriteTokenReportCSV writes the whole token inventory to w as the CSV
// file the server sends (format=csv), header row first. Cells that a
// spreadsheet would run as a formula come with a leading single quote; see
// docs/api.md. The server cuts the connection rather than end the file
// early, so an error may come after part of the file was written. It
// needs keyward:tokens:read.
func (c *Client) WriteTokenReportCSV(ctx context.Context, w io.Writer) error {
	req, err := c.newRequest(ctx, http.MethodGet, "/v1/reports/tokens?format=csv", nil, true)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/csv")
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return c.parseError(resp)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/csv" {
		return fmt.Errorf("keyward client: GET /v1/reports/tokens: the answer is %q, not CSV; is the server keyward?", mt)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("keyward client: GET /v1/reports/tokens: reading the CSV: %w", err)
	}
	return nil
}
