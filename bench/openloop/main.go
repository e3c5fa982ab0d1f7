// Command openloop sends GET requests at a fixed rate (an open loop) and
// prints latency percentiles. Request i is due at start + i/rate whether or
// not earlier ones have been answered, and its latency runs from that due
// time, not from when a connection was free to send it: a stall shows up in
// the latency of every request it delayed (no coordinated omission).
//
// Usage: openloop -url URL -rate N -duration D [-conns C] [-H 'Name: value']
//
// It prints one line: "sent=... ok=... errors=... rate=... p50=...ms
// p90=...ms p99=...ms p999=...ms max=...ms late=..." where late counts
// requests that could not be sent within 1 ms of their due time because
// every connection was busy (a sign that the rate is past what the target,
// or this machine, can take).
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	url := flag.String("url", "", "`URL` to GET")
	rate := flag.Float64("rate", 1000, "requests per second")
	duration := flag.Duration("duration", 10*time.Second, "how long to send")
	conns := flag.Int("conns", 64, "keep-alive connections (and requests in flight) at most")
	var hdrs headers
	flag.Var(&hdrs, "H", "request header `Name: value` (repeatable)")
	flag.Parse()
	if *url == "" || *rate <= 0 {
		flag.Usage()
		os.Exit(2)
	}

	tr := &http.Transport{MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns, DisableCompression: true}
	req, err := http.NewRequest("GET", *url, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for _, h := range hdrs {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			fmt.Fprintf(os.Stderr, "header %q is not Name: value\n", h)
			os.Exit(2)
		}
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}

	n := int(*rate * duration.Seconds())
	lat := make([]time.Duration, n) // by request; -1 on error
	due := make(chan int, n)        // buffered: the schedule never waits on workers
	var late, errs atomic.Int64
	var wg sync.WaitGroup
	interval := float64(time.Second) / *rate
	start := time.Now().Add(50 * time.Millisecond)
	at := func(i int) time.Time { return start.Add(time.Duration(float64(i) * interval)) }
	for w := 0; w < *conns; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 32<<10)
			for i := range due {
				t := at(i)
				if time.Since(t) > time.Millisecond {
					late.Add(1)
				}
				res, err := tr.RoundTrip(req)
				if err == nil {
					_, err = io.CopyBuffer(io.Discard, res.Body, buf)
					res.Body.Close()
					if err == nil && res.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", res.StatusCode)
					}
				}
				if err != nil {
					errs.Add(1)
					lat[i] = -1
					continue
				}
				lat[i] = time.Since(t)
			}
		}()
	}
	// The scheduler hands out request numbers at their due times; a worker
	// picks each up as soon as one is free, so a late request is charged
	// for its wait.
	for i := 0; i < n; i++ {
		if d := time.Until(at(i)); d > 0 {
			time.Sleep(d)
		}
		due <- i
	}
	close(due)
	wg.Wait()
	elapsed := time.Since(start)

	ok := lat[:0:0]
	for _, l := range lat {
		if l >= 0 {
			ok = append(ok, l)
		}
	}
	slices.Sort(ok)
	pct := func(p float64) float64 {
		if len(ok) == 0 {
			return 0
		}
		i := min(len(ok)-1, int(p*float64(len(ok))))
		return float64(ok[i]) / float64(time.Millisecond)
	}
	fmt.Printf("sent=%d ok=%d errors=%d rate=%.0f p50=%.3fms p90=%.3fms p99=%.3fms p999=%.3fms max=%.3fms late=%d\n",
		n, len(ok), errs.Load(), float64(n)/elapsed.Seconds(), pct(0.50), pct(0.90), pct(0.99), pct(0.999), pct(1), late.Load())
}
