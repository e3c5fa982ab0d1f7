// Command coldverify measures cold verification: verifying a token that
// the engine's cache does not hold, which costs store lookups, with many
// tokens stored (PRODUCT §8: p99 ≤ 2 ms with 1,000,000 tokens, on SQLite
// and on PostgreSQL). For comparison it measures, in the same run, warm
// verification of the same tokens, then in the cache.
//
// It opens the store (-data-dir for SQLite, -database-url for PostgreSQL)
// and, when it holds fewer than -n tokens, seeds the missing ones into the
// default workspace through keyward.BulkLoader, in batches of -batch
// tokens, printing the seeding rate. Seeded tokens look like real ones:
// generated texts, keyed digests under the -secret server secret, scopes,
// and, drawn at random, subjects (50%), rate limits (25%), quotas (10%),
// expiries (20%), IP allowlists (5%) and metadata (10%).
// Seeding writes no audit events and no changes: the store is benchmark
// data, not a deployment.
//
// To verify tokens, it needs their plaintexts, which no store holds. While
// seeding it keeps -sample of them, spread over the whole run, and writes
// them to -sample-file (by default next to the SQLite database), so that a
// rerun against the same store skips seeding. That file holds plaintext
// tokens of the benchmark store, made with the benchmark secret: it is
// benchmark data, written with mode 0600, and must never sit next to a
// real deployment's data. When the file is missing or does not match the
// store, -sample new tokens are seeded.
//
// The measurement starts a fresh verify.Engine with the shipped defaults
// (the change poller and the usage flusher run), a lookup budget high
// enough never to refuse a lookup, and the real clock; it verifies each
// sampled token once, every one a cache miss, then each a second time,
// every one a hit, and prints count, p50, p90, p99, max and throughput of
// both passes. Every verification must be VALID and every first one a
// miss, or the command fails. It also prints the latency of each store
// call the cold pass made, by method: a miss costs LookupSecret, then the
// cache fill's TokenByID and TokenSecrets, and QuotaUsed for a token with a
// quota; FlushUsage is the background usage write competing with them.
// -flush-interval changes the usage flush interval, to see its share.
//
// Usage:
//
//	go run ./bench/coldverify -data-dir /tmp/keyward-cold-sqlite
//	go run ./bench/coldverify -database-url 'postgres://...?search_path=keyward_bench_cold' -sample-file /tmp/cold-pg.txt
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/manage"
	"github.com/keyward/keyward/internal/postgres"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/sqlite"
	"github.com/keyward/keyward/internal/verify"
)

// benchSecret is the default server secret of the benchmark store, the hex
// of "keyward-bench-cold-verify-secret". It protects nothing.
const benchSecret = "6b6579776172642d62656e63682d636f6c642d7665726966792d736563726574"

// sampleHeader starts a sample file; the key id follows it.
const sampleHeader = "# keyward coldverify sample: plaintext tokens of a benchmark store, made with a benchmark secret. Not for real data. key="

// verifyIP is the client address of every verification; it is in the
// allowlist of the tokens that have one.
var verifyIP = netip.MustParseAddr("203.0.113.7")

type config struct {
	dataDir     string
	databaseURL string
	n           int
	batch       int
	sample      int
	sampleFile  string
	secret      string
	concurrency int
	flush       time.Duration
}

func main() {
	var c config
	flag.StringVar(&c.dataDir, "data-dir", "", "SQLite: directory of keyward.db (created if missing)")
	flag.StringVar(&c.databaseURL, "database-url", "", "PostgreSQL: connection URL (use search_path for a schema of its own)")
	flag.IntVar(&c.n, "n", 1_000_000, "tokens the store must hold; the missing ones are seeded")
	flag.IntVar(&c.batch, "batch", 10_000, "tokens per InsertTokens call while seeding")
	flag.IntVar(&c.sample, "sample", 20_000, "tokens verified in each pass")
	flag.StringVar(&c.sampleFile, "sample-file", "", "file of sampled plaintext tokens (default: coldverify-sample.txt in -data-dir, or one in the temporary directory per -database-url)")
	flag.StringVar(&c.secret, "secret", benchSecret, "server secret of the benchmark store (at least 32 bytes)")
	flag.IntVar(&c.concurrency, "c", 1, "goroutines verifying at once")
	flag.DurationVar(&c.flush, "flush-interval", 0, "usage flush interval of the engine (0: the shipped default, 1s)")
	flag.Parse()
	if (c.dataDir == "") == (c.databaseURL == "") {
		fmt.Fprintln(os.Stderr, "coldverify: give exactly one of -data-dir and -database-url")
		os.Exit(2)
	}
	if c.n < 0 || c.batch <= 0 || c.sample <= 0 || c.concurrency <= 0 {
		fmt.Fprintln(os.Stderr, "coldverify: -n must be at least 0; -batch, -sample and -c at least 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "coldverify:", err)
		os.Exit(1)
	}
}

// bulkStore is a store that can be seeded.
type bulkStore interface {
	keyward.Store
	keyward.BulkLoader
}

func run(ctx context.Context, c config, stdout, stderr io.Writer) error {
	keys, err := secret.NewKeyring(c.secret)
	if err != nil {
		return err
	}
	st, kind, where, err := open(ctx, &c)
	if err != nil {
		return err
	}
	defer st.Close()

	svc := &manage.Service{Store: st, Keys: keys}
	ws, err := svc.EnsureDefaultWorkspace(ctx)
	if err != nil {
		return fmt.Errorf("default workspace: %w", err)
	}
	stored, err := st.CountTokens(ctx)
	if err != nil {
		return err
	}
	sample, err := loadSample(ctx, c.sampleFile, st, keys)
	if err != nil {
		return err
	}
	if sample == nil && stored > 0 {
		fmt.Fprintf(stderr, "no usable sample in %s: seeding %d more tokens to sample\n", c.sampleFile, c.sample)
	}
	toSeed := max(int64(c.n)-stored, 0)
	if sample == nil {
		toSeed = max(toSeed, int64(c.sample))
	}

	fmt.Fprintf(stdout, "store         %s (%s)\n", kind, where)
	seedLine := "none"
	if toSeed > 0 {
		fmt.Fprintf(stderr, "seeding %d tokens into workspace %q, %d per call\n", toSeed, ws.Name, c.batch)
		start := time.Now()
		kept, err := seed(ctx, st, keys, ws, stored, toSeed, c, sample == nil, stderr)
		if err != nil {
			return err
		}
		took := time.Since(start)
		rate := float64(toSeed) / took.Seconds()
		seedLine = fmt.Sprintf("seeded %d in %s: %.0f tokens/s", toSeed, took.Round(100*time.Millisecond), rate)
		if kept != nil {
			sample = kept
			if err := saveSample(c.sampleFile, keys, sample); err != nil {
				return err
			}
		}
		fmt.Fprintf(stdout, "seeding       %s\n", seedLine)
	} else {
		fmt.Fprintf(stdout, "seeding       none needed (sample from %s)\n", c.sampleFile)
	}
	if stored, err = st.CountTokens(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "tokens        %d stored\n", stored)

	sample = sample[:min(len(sample), c.sample)]
	cold, warm, calls, err := measure(ctx, st, keys, sample, c.concurrency, c.flush)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "cold verify   %s\n", cold.format(time.Millisecond))
	fmt.Fprintf(stdout, "  store calls of the cold pass:\n")
	for _, m := range []string{"LookupSecret", "TokenByID", "TokenSecrets", "QuotaUsed", "FlushUsage"} {
		if l := calls[m]; l != nil {
			fmt.Fprintf(stdout, "  %-13s %6d calls: p50 %.3f ms  p99 %.3f ms  max %.3f ms  total %s\n",
				m, len(l.d), ms(l.pct(0.50)), ms(l.pct(0.99)), ms(l.max()), l.wall.Round(time.Millisecond))
		}
	}
	fmt.Fprintf(stdout, "warm verify   %s  (cached)\n", warm.format(time.Microsecond))
	fmt.Fprintf(stdout, "RESULT store=%s tokens=%d seed=%q cold_p50_ms=%.3f cold_p99_ms=%.3f cold_max_ms=%.3f cold_per_s=%.0f warm_p50_us=%.2f warm_p99_us=%.2f concurrency=%d\n",
		kind, stored, seedLine, ms(cold.pct(0.50)), ms(cold.pct(0.99)), ms(cold.max()), cold.throughput(),
		us(warm.pct(0.50)), us(warm.pct(0.99)), c.concurrency)
	return nil
}

// open opens the store the flags name and fills in the default sample file.
func open(ctx context.Context, c *config) (bulkStore, string, string, error) {
	if c.dataDir != "" {
		if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
			return nil, "", "", err
		}
		path := filepath.Join(c.dataDir, "keyward.db")
		if c.sampleFile == "" {
			c.sampleFile = filepath.Join(c.dataDir, "coldverify-sample.txt")
		}
		db, err := sqlite.Open(ctx, path)
		return db, "sqlite", path, err
	}
	if c.sampleFile == "" {
		h := sha256.Sum256([]byte(c.databaseURL))
		c.sampleFile = filepath.Join(os.TempDir(), "keyward-coldverify-"+hex.EncodeToString(h[:6])+".txt")
	}
	db, err := postgres.Open(ctx, c.databaseURL)
	return db, "postgres", redact(c.databaseURL), err
}

// redact returns a connection URL without its password.
func redact(u string) string {
	at := strings.LastIndexByte(u, '@')
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 || scheme > at {
		return u
	}
	userinfo := u[scheme+3 : at]
	if i := strings.IndexByte(userinfo, ':'); i >= 0 {
		return u[:scheme+3] + userinfo[:i] + ":xxxxx" + u[at:]
	}
	return u
}

// batch is one InsertTokens call's worth of tokens.
type batch struct {
	tokens  []*keyward.Token
	secrets []*keyward.Secret
	texts   []string
}

// seed inserts count new tokens, numbered from first, and returns the
// plaintexts of c.sample of them spread over the run when keep is true.
// Tokens are generated on one goroutine while the previous batch is
// inserted on another.
func seed(ctx context.Context, st bulkStore, keys *secret.Keyring, ws *keyward.Workspace, first, count int64, c config, keep bool, stderr io.Writer) ([]string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan batch, 2)
	genErr := make(chan error, 1)
	go func() {
		defer close(batches)
		genErr <- generate(ctx, keys, ws, first, count, c.batch, batches)
	}()

	var kept []string
	stride := max(count/int64(c.sample), 1)
	start := time.Now()
	var done int64
	nextReport := int64(100_000)
	for b := range batches {
		if err := st.InsertTokens(ctx, b.tokens, b.secrets); err != nil {
			cancel()
			for range batches {
			}
			return nil, fmt.Errorf("insert tokens %d to %d: %w", first+done, first+done+int64(len(b.tokens)), err)
		}
		if keep {
			for i, text := range b.texts {
				if (done+int64(i))%stride == 0 && len(kept) < c.sample {
					kept = append(kept, text)
				}
			}
		}
		done += int64(len(b.tokens))
		if done >= nextReport || done == count {
			el := time.Since(start)
			fmt.Fprintf(stderr, "  %8d/%d seeded in %s, %.0f tokens/s\n", done, count, el.Round(100*time.Millisecond), float64(done)/el.Seconds())
			for nextReport <= done {
				nextReport += 100_000
			}
		}
	}
	if err := <-genErr; err != nil {
		return nil, err
	}
	if done != count {
		return nil, fmt.Errorf("seeded %d tokens, want %d", done, count)
	}
	return kept, nil
}

// scopeSets are the scopes of seeded tokens, in turn.
var scopeSets = [][]string{
	{"orders:read"},
	{"orders:read", "orders:write"},
	{"billing:read", "invoices:*"},
	{"catalog:read", "catalog:items:read", "search:query"},
	{"reports:read"},
}

// generate sends count new tokens, numbered from first, in batches of size.
// Each token's features are drawn at random, independently of its number,
// so that a sample taken at a fixed stride has them in the same share.
func generate(ctx context.Context, keys *secret.Keyring, ws *keyward.Workspace, first, count int64, size int, out chan<- batch) error {
	meta := json.RawMessage(`{"team": "payments", "plan": "pro", "env": "production"}`)
	rng := rand.New(rand.NewPCG(uint64(first), 0x6b77))
	percent := func(p int) bool { return rng.IntN(100) < p }
	for done := int64(0); done < count; {
		n := int(min(int64(size), count-done))
		b := batch{
			tokens:  make([]*keyward.Token, n),
			secrets: make([]*keyward.Secret, n),
			texts:   make([]string, n),
		}
		now := time.Now().UTC()
		for j := range n {
			i := first + done + int64(j)
			text, err := secret.Generate(ws.TokenPrefix)
			if err != nil {
				return err
			}
			d := keys.Current.Digest(text)
			t := &keyward.Token{
				ID:          keyward.NewID(keyward.PrefixToken, now),
				WorkspaceID: ws.ID,
				Name:        fmt.Sprintf("bench token %d", i),
				Hint:        secret.Hint(text),
				Scopes:      scopeSets[rng.IntN(len(scopeSets))],
				CreatedBy:   keyward.ActorSystem,
				CreatedAt:   now,
				UpdatedAt:   now,
			}
			if percent(50) {
				t.Subject = fmt.Sprintf("cust_%d", rng.IntN(100_000))
			}
			if percent(25) {
				t.RateLimit = &keyward.RateLimit{Limit: 1000, Window: keyward.Duration(time.Minute)}
			}
			if percent(10) {
				t.Quota = &keyward.Quota{Limit: 1_000_000, Period: keyward.PeriodMonth}
			}
			if percent(20) {
				exp := now.Add(365 * 24 * time.Hour)
				t.ExpiresAt = &exp
			}
			if percent(5) {
				t.AllowedCIDRs = []string{"203.0.113.0/24", "2001:db8::/32"}
			}
			if percent(10) {
				t.Metadata = meta
			}
			b.tokens[j] = t
			b.secrets[j] = &keyward.Secret{Digest: d[:], KeyID: keys.Current.ID, TokenID: t.ID, CreatedAt: now}
			b.texts[j] = text
		}
		select {
		case out <- b:
		case <-ctx.Done():
			return ctx.Err()
		}
		done += int64(n)
	}
	return nil
}

// loadSample reads the sample file. It returns nil when there is none, or
// when it was made with another server secret or for another store (its
// first and last tokens are not stored).
func loadSample(ctx context.Context, path string, st keyward.Store, keys *secret.Keyring) ([]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var texts []string
	sc := bufio.NewScanner(f)
	if !sc.Scan() || sc.Text() != sampleHeader+keys.Current.ID {
		return nil, sc.Err() // another format or another secret
	}
	for sc.Scan() {
		if _, err := secret.Parse(sc.Text()); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		texts = append(texts, sc.Text())
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(texts) == 0 {
		return nil, nil
	}
	for _, text := range []string{texts[0], texts[len(texts)-1]} {
		d := keys.Current.Digest(text)
		_, _, err := st.LookupSecret(ctx, d[:])
		if keyward.ErrorCode(err) == keyward.ENOTFOUND {
			return nil, nil // the store was reset
		}
		if err != nil {
			return nil, err
		}
	}
	return texts, nil
}

// saveSample writes the sample file, mode 0600, replacing it whole.
func saveSample(path string, keys *secret.Keyring, texts []string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, sampleHeader+keys.Current.ID)
	for _, t := range texts {
		fmt.Fprintln(w, t)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// measure verifies every text twice with a fresh engine: first cold (each
// a cache miss), then warm. It fails unless every verification is VALID,
// every first one a miss and no second one. It also returns the latency of
// each store call the cold pass made, by method.
func measure(ctx context.Context, st keyward.Store, keys *secret.Keyring, texts []string, conc int, flush time.Duration) (cold, warm *latencies, calls map[string]*latencies, err error) {
	ts := &timedStore{Store: st}
	eng := verify.New(verify.Config{
		Store:         ts,
		Keys:          keys,
		Log:           slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Now:           time.Now,
		LookupBudget:  math.MaxInt32, // never the limit here
		FlushInterval: flush,
	})
	if err := eng.Start(ctx); err != nil {
		return nil, nil, nil, err
	}
	defer eng.Close(context.WithoutCancel(ctx))

	// Seeding's garbage is collected now, not during the first pass.
	runtime.GC()
	pass := func(name string, wantMisses uint64) (*latencies, error) {
		_, before, _ := eng.CacheStats()
		l, bad := verifyAll(ctx, eng, texts, conc)
		if bad != "" {
			return nil, fmt.Errorf("%s pass: %s", name, bad)
		}
		if _, after, _ := eng.CacheStats(); after-before != wantMisses {
			return nil, fmt.Errorf("%s pass: %d cache misses, want %d", name, after-before, wantMisses)
		}
		return l, ctx.Err()
	}
	ts.on.Store(true)
	cold, err = pass("cold", uint64(len(texts)))
	ts.on.Store(false)
	if err != nil {
		return nil, nil, nil, err
	}
	if warm, err = pass("warm", 0); err != nil {
		return nil, nil, nil, err
	}
	return cold, warm, ts.latencies(), nil
}

// timedStore records, while on, the latency of the store calls that a
// cache miss makes.
type timedStore struct {
	keyward.Store
	on    atomic.Bool
	mu    sync.Mutex
	calls map[string][]time.Duration
}

func (s *timedStore) record(method string, start time.Time) {
	if !s.on.Load() {
		return
	}
	d := time.Since(start)
	s.mu.Lock()
	if s.calls == nil {
		s.calls = make(map[string][]time.Duration)
	}
	s.calls[method] = append(s.calls[method], d)
	s.mu.Unlock()
}

// latencies returns the recorded latencies by method.
func (s *timedStore) latencies() map[string]*latencies {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]*latencies)
	for m, d := range s.calls {
		l := &latencies{d: slices.Clone(d)}
		for _, v := range d {
			l.wall += v
		}
		slices.Sort(l.d)
		out[m] = l
	}
	return out
}

func (s *timedStore) LookupSecret(ctx context.Context, digest []byte) (*keyward.Secret, *keyward.Token, error) {
	defer s.record("LookupSecret", time.Now())
	return s.Store.LookupSecret(ctx, digest)
}

func (s *timedStore) TokenByID(ctx context.Context, id string) (*keyward.Token, error) {
	defer s.record("TokenByID", time.Now())
	return s.Store.TokenByID(ctx, id)
}

func (s *timedStore) TokenSecrets(ctx context.Context, tokenID string) ([]*keyward.Secret, error) {
	defer s.record("TokenSecrets", time.Now())
	return s.Store.TokenSecrets(ctx, tokenID)
}

func (s *timedStore) QuotaUsed(ctx context.Context, tokenID, period string) (int64, error) {
	defer s.record("QuotaUsed", time.Now())
	return s.Store.QuotaUsed(ctx, tokenID, period)
}

func (s *timedStore) FlushUsage(ctx context.Context, id keyward.FlushID, batch []keyward.UsageFlush) error {
	defer s.record("FlushUsage", time.Now())
	return s.Store.FlushUsage(ctx, id, batch)
}

// verifyAll verifies every text once on conc goroutines, each taking an
// equal share in order, and returns the latencies, or what went wrong.
func verifyAll(ctx context.Context, eng *verify.Engine, texts []string, conc int) (*latencies, string) {
	per := make([][]time.Duration, conc)
	bad := make([]string, conc)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conc {
		lo, hi := w*len(texts)/conc, (w+1)*len(texts)/conc
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := make([]time.Duration, 0, hi-lo)
			for _, text := range texts[lo:hi] {
				t0 := time.Now()
				r := eng.Verify(ctx, verify.Request{Token: text, IP: verifyIP})
				d = append(d, time.Since(t0))
				if r.Outcome != keyward.Valid && bad[w] == "" {
					bad[w] = fmt.Sprintf("a token verified %v (err %v), want VALID", r.Outcome, r.Err)
				}
			}
			per[w] = d
		}()
	}
	wg.Wait()
	l := &latencies{wall: time.Since(start)}
	for w := range conc {
		if bad[w] != "" {
			return nil, bad[w]
		}
		l.d = append(l.d, per[w]...)
	}
	slices.Sort(l.d)
	return l, ""
}

// latencies are the sorted durations of one pass and its wall time.
type latencies struct {
	d    []time.Duration
	wall time.Duration
}

// pct returns the nearest-rank percentile p (0 < p ≤ 1).
func (l *latencies) pct(p float64) time.Duration {
	if len(l.d) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(l.d)))) - 1
	return l.d[min(max(i, 0), len(l.d)-1)]
}

func (l *latencies) max() time.Duration { return l.pct(1) }

func (l *latencies) throughput() float64 { return float64(len(l.d)) / l.wall.Seconds() }

// format returns the pass's figures in the given unit.
func (l *latencies) format(unit time.Duration) string {
	name, f := "ms", ms
	if unit == time.Microsecond {
		name, f = "µs", us
	}
	return fmt.Sprintf("%d calls: p50 %.3f %s  p90 %.3f %s  p99 %.3f %s  max %.3f %s  %.0f verifications/s",
		len(l.d), f(l.pct(0.50)), name, f(l.pct(0.90)), name, f(l.pct(0.99)), name, f(l.max()), name, l.throughput())
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
