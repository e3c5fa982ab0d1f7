package gateway

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/logfmt"
	"github.com/keyward/keyward/internal/verify"
)

// benchVerifier answers every token as valid with a rate limit, as the
// real engine does for a cached token (BenchmarkVerify measures that part).
type benchVerifier struct{ res verify.Result }

func (v *benchVerifier) Verify(ctx context.Context, req verify.Request) verify.Result { return v.res }

func newBenchVerifier() *benchVerifier {
	return &benchVerifier{res: verify.Result{
		Outcome: keyward.Valid,
		Token:   &keyward.Token{ID: "tok_bench", Subject: "bench", Scopes: []string{"orders:read"}},
		Rate:    verify.Limit{Set: true, Limit: 1 << 40, Remaining: 1 << 39, Reset: time.Second, Window: time.Minute},
	}}
}

// rawUpstream is an HTTP/1.1 upstream that answers every bodiless request
// with a fixed small response without allocating, so that the allocations
// a benchmark reports are the proxy's.
func rawUpstream(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	body := `{"id":"ord_1","status":"shipped","total":4200}` + "\n"
	res := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 47\r\nDate: Mon, 02 Jan 2026 15:04:05 GMT\r\n\r\n" + body)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	b.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReaderSize(c, 8<<10)
				for {
					// A request ends with an empty line.
					for {
						line, err := br.ReadSlice('\n')
						if err != nil {
							return
						}
						if len(line) <= 2 {
							break
						}
					}
					if _, err := c.Write(res); err != nil {
						return
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// discardWriter is a ResponseWriter that keeps nothing but its header map,
// cleared before each use.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
func (w *discardWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }
func (w *discardWriter) Flush()                      {}

// reportCPU resets the benchmark timer and returns a function that reports
// the process's CPU time per operation as cpu-ns/op: on a machine shared
// with other work, ns/op (wall time) swings with their load, CPU time much
// less.
func reportCPU(b *testing.B) func() {
	b.ResetTimer()
	start := processCPU()
	return func() {
		b.StopTimer()
		b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op")
	}
}

// benchHandler serves requests of the shape bench/gateway.sh sends with h,
// in parallel, calling ServeHTTP directly: the client side costs nothing.
func benchHandler(b *testing.B, h http.Handler, authorization string) {
	b.ReportAllocs()
	b.SetParallelism(8)
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		req := httptest.NewRequest("GET", "http://gw.example/orders/1", nil)
		req.RemoteAddr = "127.0.0.1:40000"
		req.Header.Set("User-Agent", "wrk")
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		w := &discardWriter{h: http.Header{}}
		for pb.Next() {
			clear(w.h)
			w.status, w.n = 0, 0
			h.ServeHTTP(w, req)
			if w.status != http.StatusOK && w.status != 0 || w.n != 47 {
				b.Fatalf("status %d, %d bytes", w.status, w.n)
			}
		}
	})
}

func benchGateway(b *testing.B, up string, log *slog.Logger) *Handler {
	b.Helper()
	cfg, err := Parse([]byte(`
listen: 127.0.0.1:0
workspace: default
routes:
  - name: orders
    path_prefix: /
    upstreams: [` + up + `]
    scopes: [orders:read]
`))
	if err != nil {
		b.Fatal(err)
	}
	h := NewHandler(cfg, newBenchVerifier(), "ws_1", log)
	b.Cleanup(func() { h.Close() })
	return h
}

// BenchmarkProxy compares, in one run and against the same upstream, the
// gateway handler (token auth + rate limit headers + access log to a
// discarding JSON handler) with a plain httputil.ReverseProxy (no auth, no
// log), as configured before the lean path and with its own knobs turned. ns/op and allocs/op include the round trip to
// the upstream, which itself allocates nothing. Off here, unlike in the
// shipped defaults: usage counting and metrics (the handler has no
// recorder or observer); bench/gateway.sh runs them on.
func BenchmarkProxy(b *testing.B) {
	up := rawUpstream(b)
	target, _ := url.Parse(up)
	b.Run("ReverseProxy", func(b *testing.B) {
		t := newTransport(30 * time.Second)
		t.MaxIdleConnsPerHost = 256
		rp := &httputil.ReverseProxy{
			Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.SetXForwarded() },
			Transport: t,
		}
		benchHandler(b, rp, "")
		t.CloseIdleConnections()
	})
	b.Run("ReverseProxyTuned", func(b *testing.B) {
		// ReverseProxy's own knobs: a buffer pool instead of 32 KB per
		// request, no compression negotiation, more idle connections.
		t := newTransport(30 * time.Second)
		t.MaxIdleConnsPerHost = 256
		t.DisableCompression = true
		rp := &httputil.ReverseProxy{
			Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.SetXForwarded() },
			Transport:  t,
			BufferPool: rpBufferPool{},
		}
		benchHandler(b, rp, "")
		t.CloseIdleConnections()
	})
	b.Run("Gateway", func(b *testing.B) {
		h := benchGateway(b, up, slog.New(slog.NewJSONHandler(io.Discard, nil)))
		benchHandler(b, h, "Bearer kw_bench")
	})
	b.Run("GatewayNoLog", func(b *testing.B) {
		h := benchGateway(b, up, slog.New(slog.DiscardHandler))
		benchHandler(b, h, "Bearer kw_bench")
	})
}

// rpBufferPool lends ReverseProxy the gateway's body buffers.
type rpBufferPool struct{}

func (rpBufferPool) Get() []byte  { return *bufPool.Get().(*[]byte) }
func (rpBufferPool) Put(b []byte) { bufPool.Put(&b) }

// BenchmarkProxyTCP measures the whole exchange as bench/gateway.sh does:
// an HTTP client over keep-alive connections to an httptest server running
// the handler, which proxies to the upstream. The client's own cost is in
// every figure; compare the setups with each other.
func BenchmarkProxyTCP(b *testing.B) {
	up := rawUpstream(b)
	target, _ := url.Parse(up)
	run := func(b *testing.B, h http.Handler) {
		srv := httptest.NewServer(h)
		defer srv.Close()
		tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
		defer tr.CloseIdleConnections()
		b.ReportAllocs()
		b.SetParallelism(16)
		defer reportCPU(b)()
		b.RunParallel(func(pb *testing.PB) {
			req, _ := http.NewRequest("GET", srv.URL+"/orders/1", nil)
			req.Header.Set("Authorization", "Bearer kw_bench")
			buf := make([]byte, 512)
			for pb.Next() {
				res, err := tr.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.ReadFull(res.Body, buf)
				res.Body.Close()
				if res.StatusCode != 200 || !bytes.HasPrefix(buf[:n], []byte(`{"id"`)) {
					b.Fatalf("status %d %q", res.StatusCode, buf[:n])
				}
			}
		})
	}
	b.Run("ReverseProxy", func(b *testing.B) {
		t := newTransport(30 * time.Second)
		run(b, &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.SetXForwarded() }, Transport: t})
		t.CloseIdleConnections()
	})
	b.Run("Gateway", func(b *testing.B) {
		run(b, benchGateway(b, up, slog.New(slog.NewJSONHandler(io.Discard, nil))))
	})
}

// BenchmarkServe measures the whole path as bench/gateway.sh drives it,
// in one process: keep-alive client connections to the gateway's own
// server (its request parser, raw response header and inline serving,
// which BenchmarkProxy's handler-only calls skip), the handler with token
// auth, rate limit headers and the access log (the shipped line writer,
// to a discarding writer), and the upstream. The clients write prepared
// bytes and read the response without allocating, so allocs/op are the
// gateway's. Off here, unlike in the shipped defaults: usage counting and
// metrics; bench/gateway.sh runs them on.
func BenchmarkServe(b *testing.B) {
	up := rawUpstream(b)
	h := benchGateway(b, up, slog.New(logfmt.NewText(io.Discard, nil)))
	srv := serveWith(b, &Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 64 << 10})
	addr := strings.TrimPrefix(srv.URL, "http://")
	req := []byte("GET /orders/1 HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: wrk\r\nAuthorization: Bearer kw_bench\r\n\r\n")
	b.ReportAllocs()
	b.SetParallelism(8)
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		buf := make([]byte, 4<<10)
		for pb.Next() {
			if _, err := c.Write(req); err != nil {
				b.Error(err)
				return
			}
			if err := readSmallResponse(c, buf); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// readSmallResponse reads one response of status 200 with a
// Content-Length, header and body within buf, from c.
func readSmallResponse(c net.Conn, buf []byte) error {
	n := 0
	for {
		m, err := c.Read(buf[n:])
		if err != nil {
			return err
		}
		n += m
		end := bytes.Index(buf[:n], []byte("\r\n\r\n"))
		if end < 0 {
			continue
		}
		if !bytes.HasPrefix(buf, []byte("HTTP/1.1 200 ")) {
			return fmt.Errorf("response %q", buf[:n])
		}
		i := bytes.Index(buf[:end], []byte("\r\nContent-Length: "))
		if i < 0 {
			return fmt.Errorf("no Content-Length: %q", buf[:end])
		}
		length := 0
		for _, d := range buf[i+18 : end] {
			if d < '0' || d > '9' {
				break
			}
			length = length*10 + int(d-'0')
		}
		if want := end + 4 + length; n >= want {
			if n > want {
				return fmt.Errorf("%d bytes more than the response", n-want)
			}
			return nil
		}
	}
}
