package redislimit

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/manage"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/sqlite"
	"github.com/keyward/keyward/internal/verify"
)

// BenchmarkEngineLimits compares, in one run, the verification of a
// rate-limited token with limits enforced on this node and with limits
// enforced across nodes on Redis (one round trip per verification). Their
// ratio is the price of global limits. 32 verifications are in flight at
// once on two cores, as under HTTP load, so Redis round trips overlap.
func BenchmarkEngineLimits(b *testing.B) {
	for _, mode := range []string{"Local", "Redis"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			db, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "keyward.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			keys, _ := secret.NewKeyring(strings.Repeat("b", 64))
			cfg := verify.Config{Store: db, Keys: keys}
			if mode == "Redis" {
				cfg.Global = newTestLimiter(b, testPrefix(b))
			}
			eng := verify.New(cfg)
			if err := eng.Start(ctx); err != nil {
				b.Fatal(err)
			}
			defer eng.Close(ctx)
			svc := &manage.Service{Store: db, Keys: keys, Engine: eng}
			ws, err := svc.EnsureDefaultWorkspace(ctx)
			if err != nil {
				b.Fatal(err)
			}
			_, text, err := svc.CreateToken(ctx, manage.SystemCaller(ws.ID), &keyward.Token{
				Name: "bench", RateLimit: &keyward.RateLimit{Limit: 1 << 40, Window: keyward.Duration(time.Minute)},
			})
			if err != nil {
				b.Fatal(err)
			}
			req := verify.Request{Token: text}
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if r := eng.Verify(ctx, req); r.Outcome != keyward.Valid {
						b.Errorf("outcome %v", r.Outcome)
						return
					}
				}
			})
		})
	}
}
