package e2e

import (
	"context"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward/client"
)

// cluster is several keyward nodes on one PostgreSQL store.
type cluster struct {
	store *store
	nodes []*server
	root  string
	c     []*client.Client // one client per node, with the root token
}

func startCluster(t testing.TB, n int, env []string, args ...string) *cluster {
	t.Helper()
	cl := &cluster{store: postgresStore(t)}
	cl.store.env = append(cl.store.env, env...)
	// init first: it creates the schema once, then the nodes start on it.
	cl.root = initRoot(t, cl.store)
	for i := 0; i < n; i++ {
		s := startServer(t, cl.store, args...)
		cl.nodes = append(cl.nodes, s)
		cl.c = append(cl.c, newClient(t, s.URL, cl.root))
	}
	return cl
}

// waitCode polls one node until a token verifies with the given code, and
// returns how long that took. It fails the test after timeout.
func waitCode(t testing.TB, c *client.Client, token, want string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		res, err := c.Verify(context.Background(), client.VerifyRequest{Token: token})
		if err != nil {
			t.Fatalf("verify: %v", err)
		}
		if res.Code == want {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("still %s after %v, want %s", res.Code, timeout, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestMultiNode runs three nodes on one PostgreSQL store and one Redis: a
// token made on one verifies on the others, and a revocation, suspension or
// rotation made through node 1 is seen by nodes 2 and 3.
func TestMultiNode(t *testing.T) {
	ctx := ctxT(t)
	cl := startCluster(t, 3, []string{"KEYWARD_REDIS_URL=" + redisURL(t)})
	tok, err := cl.c[0].CreateToken(ctx, client.CreateTokenRequest{Name: "shared"})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 3; i++ {
		expectCode(t, cl.c[i], client.VerifyRequest{Token: tok.Secret}, "VALID")
	}
	t.Run("Suspend", func(t *testing.T) {
		if _, err := cl.c[0].SuspendToken(ctx, tok.ID, ""); err != nil {
			t.Fatal(err)
		}
		for i := 1; i < 3; i++ {
			waitCode(t, cl.c[i], tok.Secret, "SUSPENDED", 5*time.Second)
		}
		if _, err := cl.c[1].ResumeToken(ctx, tok.ID, ""); err != nil {
			t.Fatal(err)
		}
		waitCode(t, cl.c[0], tok.Secret, "VALID", 5*time.Second)
		waitCode(t, cl.c[2], tok.Secret, "VALID", 5*time.Second)
	})
	t.Run("Rotate", func(t *testing.T) {
		next, err := cl.c[2].RotateToken(ctx, tok.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			waitCode(t, cl.c[i], tok.Secret, "EXPIRED", 5*time.Second)
			expectCode(t, cl.c[i], client.VerifyRequest{Token: next.Secret}, "VALID")
		}
		tok.Secret = next.Secret
	})
	t.Run("Revoke", func(t *testing.T) {
		if _, err := cl.c[0].RevokeToken(ctx, tok.ID, "test"); err != nil {
			t.Fatal(err)
		}
		for i := 1; i < 3; i++ {
			waitCode(t, cl.c[i], tok.Secret, "REVOKED", 5*time.Second)
		}
	})
}

// TestGlobalRateLimit runs three nodes with limits on Redis: 300
// concurrent verifications of a token limited to 50 per minute, spread
// over the nodes, admit exactly 50; a quota holds across nodes likewise.
// Redis is given with --redis-url (PRODUCT §6), the other tests use
// KEYWARD_REDIS_URL.
func TestGlobalRateLimit(t *testing.T) {
	ctx := ctxT(t)
	cl := startCluster(t, 3, nil, "--redis-url", redisURL(t))
	for _, tc := range []struct {
		name string
		req  client.CreateTokenRequest
		want string
	}{
		{"RateLimit", client.CreateTokenRequest{Name: "rate", RateLimit: &client.RateLimit{Limit: 50, Window: client.Duration(time.Minute)}}, "RATE_LIMITED"},
		{"Quota", client.CreateTokenRequest{Name: "quota", Quota: &client.Quota{Limit: 40, Period: "day"}}, "QUOTA_EXCEEDED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := cl.c[0].CreateToken(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			codes := map[string]int{}
			var wg sync.WaitGroup
			for i := 0; i < 300; i++ {
				wg.Add(1)
				go func(c *client.Client) {
					defer wg.Done()
					res, err := c.Verify(ctx, client.VerifyRequest{Token: tok.Secret})
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						codes["error: "+err.Error()]++
						return
					}
					codes[res.Code]++
				}(cl.c[i%3])
			}
			wg.Wait()
			limit := 50
			if tc.req.Quota != nil {
				limit = 40
			}
			if codes["VALID"] != limit || codes[tc.want] != 300-limit {
				t.Fatalf("codes %v, want %d VALID and %d %s", codes, limit, 300-limit, tc.want)
			}
			// A failing check on any node describes the limits as all
			// nodes used them (PRODUCT §5: from REVOKED on), not as that
			// node's own counters, which record nothing on Redis.
			for i, c := range cl.c {
				res, err := c.Verify(ctx, client.VerifyRequest{Token: tok.Secret, Scopes: []string{"not:granted"}})
				if err != nil {
					t.Fatal(err)
				}
				lim := res.RateLimit
				if tc.req.Quota != nil {
					lim = res.Quota
				}
				if res.Code != "INSUFFICIENT_SCOPE" || lim == nil || lim.Remaining != 0 || lim.Reset <= 0 {
					t.Errorf("node %d: code %s, limit %+v; want INSUFFICIENT_SCOPE with none remaining and a reset", i+1, res.Code, lim)
				}
			}
		})
	}
}

// TestPerNodeLimitsNoted: nodes on PostgreSQL without Redis enforce each
// limit alone, which serve says at start, as a warning once --nodes says
// there are several; with Redis it says nothing of the kind.
func TestPerNodeLimitsNoted(t *testing.T) {
	const note = "rate limits and quotas are enforced by each node alone"
	cl := startCluster(t, 1, nil, "--nodes", "2")
	if log := cl.nodes[0].log.String(); !strings.Contains(log, "level=WARN") || !strings.Contains(log, note) {
		t.Errorf("no warning of per-node limits:\n%s", log)
	}
	cl = startCluster(t, 1, nil, "--redis-url", redisURL(t))
	if log := cl.nodes[0].log.String(); strings.Contains(log, note) {
		t.Errorf("a node with Redis says its limits are per node:\n%s", log)
	}
}

// BenchmarkRevocationPropagation revokes tokens through node 1 of three
// and measures how long until nodes 2 and 3 both answer REVOKED, reporting
// p50 and p99 in milliseconds. Each node runs the shipped defaults.
func BenchmarkRevocationPropagation(b *testing.B) {
	cl := startCluster(b, 3, nil)
	ctx := context.Background()
	var lat []time.Duration
	for b.Loop() {
		tok, err := cl.c[0].CreateToken(ctx, client.CreateTokenRequest{Name: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		for i := 1; i < 3; i++ {
			expectCode(b, cl.c[i], client.VerifyRequest{Token: tok.Secret}, "VALID")
		}
		start := time.Now()
		if _, err := cl.c[0].RevokeToken(ctx, tok.ID, ""); err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := 1; i < 3; i++ {
			wg.Add(1)
			go func(c *client.Client) {
				defer wg.Done()
				waitCode(b, c, tok.Secret, "REVOKED", 10*time.Second)
			}(cl.c[i])
		}
		wg.Wait()
		lat = append(lat, time.Since(start))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op")
}

// TestNotificationReconnect cuts a node's LISTEN connection from the
// database side: the node says so, reconnects, and a revocation made
// meanwhile through another node still reaches it.
func TestNotificationReconnect(t *testing.T) {
	ctx := ctxT(t)
	cl := startCluster(t, 2, nil)
	tok, err := cl.c[0].CreateToken(ctx, client.CreateTokenRequest{Name: "watched"})
	if err != nil {
		t.Fatal(err)
	}
	expectCode(t, cl.c[1], client.VerifyRequest{Token: tok.Secret}, "VALID")

	conn, err := pgx.Connect(ctx, postgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE query = 'LISTEN keyward_changes' AND application_name = $1`, cl.store.name).Scan(&n)
	if err != nil || n < 2 {
		t.Fatalf("terminated %d listening connections (want both nodes'): %v", n, err)
	}
	if _, err := cl.c[0].RevokeToken(ctx, tok.ID, ""); err != nil {
		t.Fatal(err)
	}
	waitCode(t, cl.c[1], tok.Secret, "REVOKED", 5*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(cl.nodes[1].log.String(), "change notifications restored") {
		if time.Now().After(deadline) {
			t.Fatalf("node 2 did not report its notifications lost and restored:\n%s", cl.nodes[1].log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(cl.nodes[1].log.String(), "change notifications lost") {
		t.Fatal("node 2 did not log the lost connection")
	}
}
