package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/client"
)

// ownRedis is a redis-server of the test's own, which it may stop and
// start; it keeps nothing on disk, so a restart loses every count.
type ownRedis struct {
	t    testing.TB
	port int
	cmd  *exec.Cmd
	URL  string
}

func startOwnRedis(t testing.TB) *ownRedis {
	t.Helper()
	redisURL(t) // the same gate as every Redis test
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not installed")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &ownRedis{t: t, port: l.Addr().(*net.TCPAddr).Port}
	l.Close()
	r.URL = fmt.Sprintf("redis://127.0.0.1:%d/0", r.port)
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *ownRedis) start() {
	r.t.Helper()
	r.cmd = exec.Command("redis-server", "--bind", "127.0.0.1", "--port", fmt.Sprint(r.port), "--save", "", "--appendonly", "no")
	dieWithTest(r.cmd)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", r.port)); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.t.Fatal("redis-server did not start")
}

func (r *ownRedis) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
		r.cmd = nil
	}
}

// TestRedisOutage takes Redis away from a node with global limits: with
// the default fallback (closed) limited tokens are refused and others
// still verify, /readyz says so; when Redis returns empty, quotas resume
// from the store's durable counts, not from zero.
func TestRedisOutage(t *testing.T) {
	ctx := ctxT(t)
	rd := startOwnRedis(t)
	st := sqliteStore(t)
	st.env = append(st.env, "KEYWARD_REDIS_URL="+rd.URL)
	srv := startServer(t, st)
	admin := newClient(t, srv.URL, initRoot(t, st))
	metered, err := admin.CreateToken(ctx, client.CreateTokenRequest{Name: "metered", Quota: &client.Quota{Limit: 5, Period: "month"}})
	if err != nil {
		t.Fatal(err)
	}
	free, err := admin.CreateToken(ctx, client.CreateTokenRequest{Name: "free"})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		expectCode(t, admin, client.VerifyRequest{Token: metered.Secret}, "VALID")
	}
	time.Sleep(300 * time.Millisecond) // past the 50ms usage flush

	rd.stop()
	t.Run("FallbackClosed", func(t *testing.T) {
		expectCode(t, admin, client.VerifyRequest{Token: metered.Secret}, "RATE_LIMITED")
		expectCode(t, admin, client.VerifyRequest{Token: free.Secret}, "VALID")
	})
	t.Run("ReadyzSaysDegraded", func(t *testing.T) {
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var v map[string]string
		json.Unmarshal(body, &v)
		if resp.StatusCode != http.StatusOK || v["status"] != "degraded" || v["redis"] != "unreachable; limits fall back to closed" {
			t.Fatalf("/readyz: %d %s", resp.StatusCode, body)
		}
	})

	rd.start() // empty: every count is gone
	t.Run("QuotaResumesFromStore", func(t *testing.T) {
		deadline := time.Now().Add(15 * time.Second)
		for {
			res, err := admin.Verify(ctx, client.VerifyRequest{Token: metered.Secret})
			if err != nil {
				t.Fatal(err)
			}
			if res.Code == "VALID" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("still %s after Redis returned", res.Code)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// 3 before the outage + 1 just now: one left of 5.
		expectCode(t, admin, client.VerifyRequest{Token: metered.Secret}, "VALID")
		expectCode(t, admin, client.VerifyRequest{Token: metered.Secret}, "QUOTA_EXCEEDED")
	})
}

// TestRedisDownAtStart: a node whose Redis does not answer at start still
// starts, says so at once, and refuses limited tokens (fallback closed)
// until Redis answers.
func TestRedisDownAtStart(t *testing.T) {
	ctx := ctxT(t)
	rd := startOwnRedis(t)
	rd.stop()
	st := sqliteStore(t)
	st.env = append(st.env, "KEYWARD_REDIS_URL="+rd.URL)
	srv := startServer(t, st)
	if !strings.Contains(srv.log.String(), `msg="Redis does not answer: rate limits and quotas fall back to --redis-fallback until it does" redis_fallback=closed`) {
		t.Errorf("the start did not say Redis is down:\n%s", srv.log)
	}
	admin := newClient(t, srv.URL, initRoot(t, st))
	limited, err := admin.CreateToken(ctx, client.CreateTokenRequest{Name: "limited", RateLimit: &client.RateLimit{Limit: 5, Window: client.Duration(time.Minute)}})
	if err != nil {
		t.Fatal(err)
	}
	expectCode(t, admin, client.VerifyRequest{Token: limited.Secret}, "RATE_LIMITED")
	rd.start()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		res, err := admin.Verify(ctx, client.VerifyRequest{Token: limited.Secret})
		if err != nil {
			t.Fatal(err)
		}
		if res.Code == "VALID" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %s after Redis came up", res.Code)
		}
	}
}
