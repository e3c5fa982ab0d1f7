// Command soak drives a running keyward (API and gateway) with a mixed
// load for a while and samples its resources, to find what grows and
// does not come back: goroutines, open files, RSS, PostgreSQL connections
// and Redis clients. It runs its own upstreams, rewrites the gateway
// config and sends the server SIGHUP. See the README's "Tests and
// benchmarks" section for how to run it.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keyward/keyward/client"
)

var (
	server   = flag.String("server", "http://127.0.0.1:8080", "keyward API base URL")
	gateway  = flag.String("gateway", "127.0.0.1:8081", "gateway listen address (as in the config)")
	upAddr   = flag.String("upstream", "127.0.0.1:9101", "address of the steady upstream this command serves")
	flakAddr = flag.String("flaky", "127.0.0.1:9102", "address of the upstream this command restarts every -restart")
	restart  = flag.Duration("restart", 20*time.Second, "how often the flaky upstream restarts")
	cfgPath  = flag.String("config", "", "gateway config file to write (keyward serve must read it)")
	pid      = flag.Int("pid", 0, "keyward's process id, for SIGHUP and /proc samples")
	hup      = flag.Duration("hup", 10*time.Second, "SIGHUP interval; every other one with a broken config")
	duration = flag.Duration("duration", 3*time.Minute, "how long to load")
	settle   = flag.Duration("settle", 30*time.Second, "how long to keep sampling after the load")
	rate     = flag.Int("rate", 300, "operations per second, all kinds together")
	every    = flag.Duration("sample", 10*time.Second, "sample interval")
	pgDB     = flag.String("pg-db", "", "PostgreSQL database whose connections to count")
	pgURL    = flag.String("pg-url", "postgres://postgres@127.0.0.1:5432/postgres", "where psql counts them")
	redisDB  = flag.String("redis", "", "redis-cli -u URL whose connected clients to count")
	setup    = flag.Bool("write-config", false, "only write the good gateway config and exit")
)

func main() {
	flag.Parse()
	log.SetFlags(log.Ltime)
	if *cfgPath == "" {
		log.Fatal("-config is required")
	}
	if *setup {
		writeConfig(0)
		return
	}
	if *pid == 0 {
		log.Fatal("-pid is required")
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	c, err := client.NewFromEnv(client.WithHTTPClient(hc))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	serveUpstream(*upAddr, nil)
	go flaky()

	// Fixed tokens for the gateway and verify mix.
	mk := func(r client.CreateTokenRequest) *client.IssuedToken {
		t, err := c.CreateToken(ctx, r)
		if err != nil {
			log.Fatalf("create token: %v", err)
		}
		return t
	}
	good := mk(client.CreateTokenRequest{Name: "soak good", Scopes: []string{"api:read"}})
	limited := mk(client.CreateTokenRequest{Name: "soak limited", Scopes: []string{"api:read"},
		RateLimit: &client.RateLimit{Limit: 5, Window: client.Duration(10 * time.Second)}})
	revoked := mk(client.CreateTokenRequest{Name: "soak revoked", Scopes: []string{"api:read"}})
	if _, err := c.RevokeToken(ctx, revoked.ID, "soak"); err != nil {
		log.Fatal(err)
	}
	scopeless := mk(client.CreateTokenRequest{Name: "soak scopeless", Scopes: []string{"other:read"}})
	toks := []string{good.Secret, good.Secret, good.Secret, limited.Secret, revoked.Secret, scopeless.Secret,
		"kw_notatoken", unknownToken(), unknownToken()}

	s := newSampler()
	s.take("start")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.loop(stop) }()
	go func() { defer wg.Done(); reloads(stop) }()

	ops := []struct {
		name   string
		weight int
		f      func() error
	}{
		{"gw-plain", 40, func() error { return gwPlain(toks[rand.IntN(len(toks))], "/api/x") }},
		{"gw-flaky", 8, func() error { return gwPlain(good.Secret, "/flaky/x") }},
		{"gw-slow", 3, func() error { return gwPlain(good.Secret, "/slow/x") }},
		{"gw-sse", 3, func() error { return gwStream(good.Secret, "/api/sse", false) }},
		{"gw-chunked-cut", 3, func() error { return gwStream(good.Secret, "/api/chunked", true) }},
		{"gw-ws", 2, func() error { return gwWebSocket(good.Secret) }},
		{"gw-cut-request", 3, func() error { return gwCutRequest(good.Secret) }},
		{"gw-big-cut", 2, func() error { return gwStream(good.Secret, "/api/big", true) }},
		{"verify", 10, func() error {
			_, err := c.Verify(ctx, client.VerifyRequest{Token: toks[rand.IntN(len(toks))], Scopes: []string{"api:read"}})
			return err
		}},
		{"introspect", 4, func() error { _, err := c.Introspect(ctx, toks[rand.IntN(len(toks))]); return err }},
		{"churn", 4, func() error { return churn(ctx, c) }},
		{"list", 3, func() error {
			l, err := c.ListTokens(ctx, client.TokenFilter{Limit: 20})
			if err == nil && l.NextCursor != "" {
				_, err = c.ListTokens(ctx, client.TokenFilter{Limit: 20, Cursor: l.NextCursor})
			}
			return err
		}},
		{"audit", 2, func() error { _, err := c.ListAudit(ctx, client.ListOptions{Limit: 50}); return err }},
		{"usage", 1, func() error {
			_, err := c.Usage(ctx, client.UsageQuery{})
			if err == nil {
				_, err = c.ListTokenReport(ctx, client.ListOptions{Limit: 50})
			}
			return err
		}},
	}
	total := 0
	for _, o := range ops {
		total += o.weight
	}
	counts := make([]atomic.Int64, len(ops))
	fails := make([]atomic.Int64, len(ops))
	sem := make(chan struct{}, 256)
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	end := time.After(*duration)
	var inflight sync.WaitGroup
load:
	for {
		select {
		case <-end:
			break load
		case <-tick.C:
		}
		n := rand.IntN(total)
		i := 0
		for ; n >= ops[i].weight; i++ {
			n -= ops[i].weight
		}
		select {
		case sem <- struct{}{}:
		default:
			continue // at the cap: skip rather than queue
		}
		inflight.Add(1)
		go func() {
			defer func() { <-sem; inflight.Done() }()
			counts[i].Add(1)
			if err := ops[i].f(); err != nil {
				if fails[i].Add(1) <= 3 {
					log.Printf("%s: %v", ops[i].name, err)
				}
			}
		}()
	}
	tick.Stop()
	inflight.Wait()
	// What stays open after this is the server's own doing.
	hc.CloseIdleConnections()
	gwClient.CloseIdleConnections()
	log.Printf("load done")
	for i, o := range ops {
		log.Printf("  %-15s %6d ops, %5d client-side errors", o.name, counts[i].Load(), fails[i].Load())
	}
	time.Sleep(*settle)
	close(stop)
	wg.Wait()
	s.take("end")
	s.print()
}

// unknownToken returns a well-formed token that no store holds (random
// part and checksum as PRODUCT.md §3 describes them), which the server
// answers NOT_FOUND after a lookup within its budget.
func unknownToken() string {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := []byte("kw_")
	for range 32 {
		b = append(b, digits[rand.IntN(62)])
	}
	sum := crc32.ChecksumIEEE(b)
	var c [6]byte
	for i := 5; i >= 0; i-- {
		c[i] = digits[sum%62]
		sum /= 62
	}
	return string(append(b, c[:]...))
}

var churnIDs struct {
	sync.Mutex
	ids []string
}

// churn runs one management step on a pool of short-lived tokens.
func churn(ctx context.Context, c *client.Client) error {
	churnIDs.Lock()
	var id string
	if n := len(churnIDs.ids); n > 0 && rand.IntN(3) > 0 {
		id = churnIDs.ids[rand.IntN(n)]
	}
	churnIDs.Unlock()
	if id == "" {
		t, err := c.CreateToken(ctx, client.CreateTokenRequest{Name: "soak churn", Scopes: []string{"api:read"},
			ExpiresIn: client.Duration(time.Hour), Metadata: map[string]any{"soak": true}})
		if err != nil {
			return err
		}
		churnIDs.Lock()
		churnIDs.ids = append(churnIDs.ids, t.ID)
		churnIDs.Unlock()
		return nil
	}
	var err error
	switch rand.IntN(5) {
	case 0:
		_, err = c.RotateToken(ctx, id, &client.RotateRequest{GracePeriod: client.Duration(time.Minute)})
	case 1:
		_, err = c.SuspendToken(ctx, id, "soak")
	case 2:
		_, err = c.ResumeToken(ctx, id, "soak")
	case 3:
		_, err = c.RevokeToken(ctx, id, "soak")
		churnIDs.Lock()
		for i, x := range churnIDs.ids {
			if x == id {
				churnIDs.ids = append(churnIDs.ids[:i], churnIDs.ids[i+1:]...)
				break
			}
		}
		churnIDs.Unlock()
	case 4:
		var t *client.IssuedToken
		t, err = c.RotateToken(ctx, id, nil)
		if err == nil {
			err = c.OAuthRevoke(ctx, t.Secret)
		}
	}
	if client.IsConflict(err) || client.IsNotFound(err) {
		return nil // a race between two steps on one token
	}
	return err
}

var gwClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

func gwReq(tok, path string) *http.Request {
	r, _ := http.NewRequest("GET", "http://"+*gateway+path, nil)
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	return r
}

func gwPlain(tok, path string) error {
	resp, err := gwClient.Do(gwReq(tok, path))
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 500 && resp.StatusCode != 502 && resp.StatusCode != 504 {
		return fmt.Errorf("%s: status %d", path, resp.StatusCode)
	}
	return err
}

// gwStream reads a streamed answer, whole or, with cut, only its start
// before dropping the connection.
func gwStream(tok, path string, cut bool) error {
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 15 * time.Second}).Do(gwReq(tok, path))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if cut {
		_, err = io.CopyN(io.Discard, resp.Body, 3000)
		if errors.Is(err, io.EOF) {
			err = nil
		}
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}

// gwCutRequest sends part of a request body and leaves.
func gwCutRequest(tok string) error {
	conn, err := net.DialTimeout("tcp", *gateway, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 100000\r\n\r\n", tok)
	conn.Write(make([]byte, 2000))
	time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
	return nil
}

// gwWebSocket upgrades, echoes a few bytes, holds the connection and
// closes it.
func gwWebSocket(tok string) error {
	conn, err := net.DialTimeout("tcp", *gateway, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	fmt.Fprintf(conn, "GET /api/ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", tok)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != 101 {
		return fmt.Errorf("ws: status %d", resp.StatusCode)
	}
	for range 3 {
		conn.Write([]byte("ping"))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(br, buf); err != nil {
			return err
		}
		time.Sleep(time.Duration(500+rand.IntN(1500)) * time.Millisecond)
	}
	return nil
}

// serveUpstream serves the upstream handlers on addr and returns its server.
func serveUpstream(addr string, ln net.Listener) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	})
	mux.HandleFunc("/slow/", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
		}
		io.WriteString(w, "late")
	})
	mux.HandleFunc("/api/sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 10 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(50 * time.Millisecond)
		}
	})
	stream := func(n int, pause time.Duration) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			chunk := strings.Repeat("x", 1024)
			for range n {
				if _, err := io.WriteString(w, chunk); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				if pause > 0 {
					time.Sleep(pause)
				}
			}
		}
	}
	mux.HandleFunc("/api/chunked", stream(50, 20*time.Millisecond))
	mux.HandleFunc("/api/big", stream(20000, 0))
	mux.HandleFunc("/api/ws", func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw)
	})
	s := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			log.Fatal(err)
		}
	}
	go s.Serve(ln)
	return s
}

// flaky serves the flaky upstream, down for 2 s every -restart.
func flaky() {
	for {
		ln, err := net.Listen("tcp", *flakAddr)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		s := serveUpstream(*flakAddr, ln)
		time.Sleep(*restart - 2*time.Second)
		s.Close()
		time.Sleep(2 * time.Second)
	}
}

// writeConfig writes a good config (n even; the timeouts vary so every
// reload builds new routes) or a broken one (n odd).
func writeConfig(n int) {
	cfg := fmt.Sprintf(`listen: %s
workspace: default
server:
  idle_timeout: 30s
routes:
  - name: api
    path_prefix: /api
    upstreams: [http://%s]
    scopes: [api:read]
    timeout: %ds
  - name: slow
    path_prefix: /slow
    upstreams: [http://%s]
    scopes: [api:read]
    timeout: 500ms
  - name: flaky
    path_prefix: /flaky
    upstreams: [http://%s, http://%s]
    scopes: [api:read]
    timeout: 2s
    eject_after: 3
    health_check: {path: /healthz, interval: 1s, timeout: 500ms}
`, *gateway, *upAddr, 5+n%7, *upAddr, *flakAddr, *upAddr)
	if n%2 == 1 {
		cfg += "  - name: broken\n    path_prefix: /x\n    upstreams: [ftp://nowhere]\n    bogus_key: 1\n"
	}
	if err := os.WriteFile(*cfgPath, []byte(cfg), 0o644); err != nil {
		log.Fatal(err)
	}
}

func reloads(stop chan struct{}) {
	t := time.NewTicker(*hup)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-stop:
			writeConfig(0)
			return
		case <-t.C:
		}
		writeConfig(n)
		syscall.Kill(*pid, syscall.SIGHUP)
	}
}

type sample struct {
	label                                  string
	at                                     time.Time
	goroutines, fds, rssKB, heapKB, pg, rd int
}

type sampler struct {
	mu      sync.Mutex
	samples []sample
}

func newSampler() *sampler { return &sampler{} }

func (s *sampler) loop(stop chan struct{}) {
	t := time.NewTicker(*every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			s.take("")
		}
	}
}

func (s *sampler) take(label string) {
	x := sample{label: label, at: time.Now(), goroutines: -1, fds: -1, rssKB: -1, heapKB: -1, pg: -1, rd: -1}
	if resp, err := http.Get(*server + "/metrics"); err == nil {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
				x.goroutines, _ = strconv.Atoi(v)
			}
			if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				x.heapKB = int(f / 1024)
			}
		}
		resp.Body.Close()
	}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", *pid)); err == nil {
		x.fds = len(ents)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", *pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				x.rssKB, _ = strconv.Atoi(strings.Fields(v)[0])
			}
		}
	}
	if *pgDB != "" {
		// The name goes as a psql variable, quoted by psql, never spliced
		// into the query.
		cmd := exec.Command("psql", "-X", "-At", "-v", "db="+*pgDB, *pgURL)
		cmd.Stdin = strings.NewReader("select count(*) from pg_stat_activity where datname = :'db';\n")
		out, err := cmd.Output()
		if err == nil {
			x.pg, _ = strconv.Atoi(strings.TrimSpace(string(out)))
		}
	}
	if *redisDB != "" {
		out, err := exec.Command("redis-cli", "-u", *redisDB, "info", "clients").Output()
		if err == nil {
			for _, l := range strings.Split(string(out), "\n") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(l), "connected_clients:"); ok {
					x.rd, _ = strconv.Atoi(v)
				}
			}
		}
	}
	s.mu.Lock()
	s.samples = append(s.samples, x)
	s.mu.Unlock()
	log.Printf("sample %-5s goroutines=%d fds=%d rss=%dKB heap=%dKB pg=%d redis=%d", label, x.goroutines, x.fds, x.rssKB, x.heapKB, x.pg, x.rd)
}

func (s *sampler) print() {
	s.mu.Lock()
	defer s.mu.Unlock()
	first, last := s.samples[0], s.samples[len(s.samples)-1]
	peak := first
	for _, x := range s.samples {
		peak.goroutines = max(peak.goroutines, x.goroutines)
		peak.fds = max(peak.fds, x.fds)
		peak.rssKB = max(peak.rssKB, x.rssKB)
		peak.heapKB = max(peak.heapKB, x.heapKB)
		peak.pg = max(peak.pg, x.pg)
		peak.rd = max(peak.rd, x.rd)
	}
	fmt.Printf("%-12s %8s %8s %8s\n", "resource", "start", "peak", "end")
	row := func(name string, f func(sample) int) {
		fmt.Printf("%-12s %8d %8d %8d\n", name, f(first), f(peak), f(last))
	}
	row("goroutines", func(x sample) int { return x.goroutines })
	row("open fds", func(x sample) int { return x.fds })
	row("rss KB", func(x sample) int { return x.rssKB })
	row("heap KB", func(x sample) int { return x.heapKB })
	row("pg conns", func(x sample) int { return x.pg })
	row("redis", func(x sample) int { return x.rd })
}
