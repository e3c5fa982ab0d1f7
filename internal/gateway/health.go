package gateway

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultEjectCooldown is how long a passively ejected upstream is skipped
// when no health check brings it back first.
const DefaultEjectCooldown = 10 * time.Second

// upstream is one upstream of a route with its health.
type upstream struct {
	url   *url.URL
	pool  *connPool    // keep-alive connections for proxied requests
	fails atomic.Int32 // consecutive failed exchanges
	// ejectedUntil is the UnixNano time until which passive ejection skips
	// the upstream; 0 when it is not ejected.
	ejectedUntil atomic.Int64
	down         atomic.Bool // the last active health check failed
}

// healthy reports whether the upstream may be chosen at now.
func (u *upstream) healthy(now int64) bool {
	return !u.down.Load() && u.ejectedUntil.Load() <= now
}

// pick returns the index of the first healthy upstream of ups at or after
// start, skipping skip (-1 for none). When none is healthy it fails open:
// the first index at or after start other than skip.
func pick(ups []*upstream, start, skip int, now int64) int {
	n := len(ups)
	for i := 0; i < n; i++ {
		j := (start + i) % n
		if j != skip && ups[j].healthy(now) {
			return j
		}
	}
	if start%n == skip {
		return (start + 1) % n
	}
	return start % n
}

// observe records the outcome of one exchange with u: a transport error
// counts towards ejection, any answer resets the count.
func (b *balancer) observe(u *upstream, err error) {
	if err == nil {
		if u.fails.Load() != 0 {
			u.fails.Store(0)
		}
		return
	}
	n := b.rt.cfg.EjectAfter
	if n <= 0 {
		return
	}
	if u.fails.Add(1) >= int32(n) {
		u.fails.Store(0)
		u.ejectedUntil.Store(time.Now().Add(b.cooldown).UnixNano())
		b.log.Warn("gateway upstream ejected", "route", b.rt.cfg.Name, "upstream", u.url.String(), "failures", n, "cooldown", b.cooldown)
	}
}

// checker runs the active health checks of a Handler's routes until
// stopped.
type checker struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

func (h *Handler) startChecks() {
	ctx, cancel := context.WithCancel(context.Background())
	h.checks = &checker{cancel: cancel}
	for _, rt := range h.router.routes {
		if rt.cfg.HealthCheck == nil {
			continue
		}
		h.checks.wg.Add(1)
		go func() {
			defer h.checks.wg.Done()
			rt.balancer.checkLoop(ctx)
		}()
	}
}

// Close stops the Handler's active health checks and waits for them to
// end, and closes its idle upstream connections. Requests in flight, and
// any served afterwards, still work: Close releases nothing that proxying
// needs (connections are dialed anew, and closed after use). It may be
// called more than once.
func (h *Handler) Close() error {
	h.checks.once.Do(func() {
		h.checks.cancel()
		h.checks.wg.Wait()
		for _, rt := range h.router.routes {
			for _, u := range rt.balancer.ups {
				u.pool.close()
			}
			rt.balancer.next.(*http.Transport).CloseIdleConnections()
		}
	})
	return nil
}

func (b *balancer) checkLoop(ctx context.Context) {
	hc := b.rt.cfg.HealthCheck
	t := time.NewTicker(hc.Interval)
	defer t.Stop()
	for {
		var wg sync.WaitGroup
		for _, u := range b.ups {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b.check(ctx, u)
			}()
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check runs one health check of u and records its result. A pass also
// ends a passive ejection.
func (b *balancer) check(ctx context.Context, u *upstream) {
	hc := b.rt.cfg.HealthCheck
	ctx, cancel := context.WithTimeout(ctx, hc.Timeout)
	defer cancel()
	// The path's query (/healthz?full=1) goes as the query, not escaped
	// into the path; the path goes as written, its escapes (/a%2Fb) not
	// escaped again (the config holds only valid ones: originPath).
	path, query, _ := strings.Cut(hc.Path, "?")
	target := &url.URL{Path: path, RawPath: path, RawQuery: query}
	if p, err := url.PathUnescape(path); err == nil {
		target.Path = p
	}
	targetURL(target, u.url)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return
	}
	req.Header.Set("User-Agent", "keyward-gateway-health")
	res, err := b.next.RoundTrip(req)
	if ctx.Err() != nil && err != nil && ctx.Err() == context.Canceled {
		return // stopped by Close, not a verdict
	}
	ok := err == nil && res.StatusCode >= 200 && res.StatusCode < 400
	if err == nil {
		io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
		res.Body.Close()
	}
	if ok {
		u.fails.Store(0)
		u.ejectedUntil.Store(0)
		if u.down.Swap(false) {
			b.log.Info("gateway upstream healthy", "route", b.rt.cfg.Name, "upstream", u.url.String())
		}
		return
	}
	if !u.down.Swap(true) {
		attrs := []any{"route", b.rt.cfg.Name, "upstream", u.url.String()}
		if err != nil {
			attrs = append(attrs, "err", err.Error())
		} else {
			attrs = append(attrs, "status", res.StatusCode)
		}
		b.log.Warn("gateway upstream failed its health check", attrs...)
	}
}
