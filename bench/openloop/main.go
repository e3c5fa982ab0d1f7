// Command openloop sends GET requests at a fixed rate (an open loop) and
// prints latency percentiles. Request i is due at start + i/rate whether or
// not earlier ones have been answered, and its latency runs from that due
// time, not from when a connection was free to send it: a stall shows up in
// the latency of every request it delayed (no coordinated omission).
//
// It speaks HTTP/1.1 itself over plain keep-alive connections, with the
// request written from bytes prepared once and the response read just
// enough to find its end: on a small machine the load tool shares the CPU
// with what it measures, and net/http's client cost about as much per
// request as the proxy under test, which saturated the machine at rates
// the proxy alone would take easily.
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
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	target := flag.String("url", "", "`URL` to GET (http only)")
	rate := flag.Float64("rate", 1000, "requests per second")
	duration := flag.Duration("duration", 10*time.Second, "how long to send")
	conns := flag.Int("conns", 64, "keep-alive connections (and requests in flight) at most")
	var hdrs headers
	flag.Var(&hdrs, "H", "request header `Name: value` (repeatable)")
	slow := flag.Duration("slow", 0, "also print to stderr each stretch of requests slower than `D`, by due time from the start (0: none)")
	flag.Parse()
	u, err := url.Parse(*target)
	if *target == "" || *rate <= 0 || err != nil || u.Scheme != "http" || u.Host == "" {
		fmt.Fprintln(os.Stderr, "openloop: -url must be an http:// URL and -rate positive")
		flag.Usage()
		os.Exit(2)
	}
	var req bytes.Buffer
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: openloop\r\n", u.RequestURI(), u.Host)
	for _, h := range hdrs {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			fmt.Fprintf(os.Stderr, "header %q is not Name: value\n", h)
			os.Exit(2)
		}
		fmt.Fprintf(&req, "%s: %s\r\n", strings.TrimSpace(k), strings.TrimSpace(v))
	}
	req.WriteString("\r\n")
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}

	n := int(*rate * duration.Seconds())
	lat := make([]time.Duration, n) // by request; -1 on error
	due := make(chan int, n)        // buffered: the schedule never waits on workers
	var late, errs atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	interval := float64(time.Second) / *rate
	start := time.Now().Add(50 * time.Millisecond)
	at := func(i int) time.Time { return start.Add(time.Duration(float64(i) * interval)) }
	for w := 0; w < *conns; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *client
			for i := range due {
				t := at(i)
				if time.Since(t) > time.Millisecond {
					late.Add(1)
				}
				var err error
				if c == nil {
					c, err = dial(addr)
				}
				keep := false
				if err == nil {
					keep, err = c.get(req.Bytes())
				}
				if err != nil {
					if c != nil {
						c.conn.Close()
						c = nil
					}
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					lat[i] = -1
					continue
				}
				lat[i] = time.Since(t)
				if !keep {
					c.conn.Close()
					c = nil
				}
			}
			if c != nil {
				c.conn.Close()
			}
		}()
	}
	// The schedule hands out request numbers as they fall due, all those
	// due at once when a sleep overran; a worker picks each up as soon as
	// one is free, and latency runs from the due time either way.
	for i := 0; i < n; {
		now := time.Now()
		for ; i < n && !at(i).After(now); i++ {
			due <- i
		}
		if i < n {
			runtime.Gosched() // let the workers just woken send first
			sleepUntil(at(i))
		}
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
	if *slow > 0 {
		printStalls(os.Stderr, lat, at, start, *slow)
	}
	if e := firstErr.Load(); e != nil {
		fmt.Fprintln(os.Stderr, "openloop: first error:", e)
	}
}

// sleepUntil returns at t, or as soon after as the kernel wakes it. Go's
// own timers wait in the poller, whose timeout counts in whole
// milliseconds on Linux: a time.Sleep of 100 µs takes over 1 ms there,
// which at thousands of requests a second would send them in bursts each
// millisecond instead of spread evenly. So the last stretch before t is
// slept in the kernel (nanosleep: tens of µs late), not in the runtime.
func sleepUntil(t time.Time) {
	d := time.Until(t)
	if d > 2*time.Millisecond {
		time.Sleep(d - 2*time.Millisecond)
		d = time.Until(t)
	}
	if d > 0 {
		preciseSleep(d)
	}
}

// client is one keep-alive connection.
type client struct {
	conn net.Conn
	br   *bufio.Reader
	buf  []byte
}

func dial(addr string) (*client, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &client{conn: c, br: bufio.NewReaderSize(c, 16<<10), buf: make([]byte, 16<<10)}, nil
}

// get sends req and reads the response whole: an error for anything but
// 200; keep is false when the server closes the connection after it.
func (c *client) get(req []byte) (keep bool, err error) {
	if _, err := c.conn.Write(req); err != nil {
		return false, err
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return false, err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return false, fmt.Errorf("response %q", bytes.TrimSpace(line))
	}
	length, chunked, closing := int64(-1), false, false
	err = c.fields(func(k, v []byte) (err error) {
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			length, err = strconv.ParseInt(string(v), 10, 64)
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(v, []byte("chunked"))
		case bytes.EqualFold(k, []byte("Connection")):
			closing = bytes.EqualFold(v, []byte("close"))
		}
		return err
	})
	if err != nil {
		return false, err
	}
	var body io.Reader
	switch {
	case chunked:
		body = httputil.NewChunkedReader(c.br)
	case length >= 0:
		body = io.LimitReader(c.br, length)
	default:
		return false, errors.New("a response without a length")
	}
	if _, err := io.CopyBuffer(io.Discard, body, c.buf); err != nil {
		return false, err
	}
	if chunked {
		// The chunked reader stops after the last chunk: the trailer
		// section follows.
		if err := c.fields(func(k, v []byte) error { return nil }); err != nil {
			return false, err
		}
	}
	return !closing, nil
}

// fields reads header (or trailer) fields up to the blank line that ends
// them, handing each name and trimmed value to f.
func (c *client) fields(f func(k, v []byte) error) error {
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			return nil
		}
		k, v, _ := bytes.Cut(line, []byte(":"))
		if err := f(k, bytes.TrimSpace(v)); err != nil {
			return err
		}
	}
}

// printStalls prints each stretch of time, by due time from the start, in
// which requests went over limit (or failed), with how many and the worst:
// when a target stalled, and for how long. Slow requests less than 100 ms
// apart fall in one stretch.
func printStalls(w io.Writer, lat []time.Duration, at func(int) time.Time, start time.Time, limit time.Duration) {
	const gap = 100 * time.Millisecond
	slow := func(l time.Duration) bool { return l < 0 || l > limit }
	for i := 0; i < len(lat); i++ {
		if !slow(lat[i]) {
			continue
		}
		last, n, failed, worst := i, 0, 0, time.Duration(0)
		for j := i; j < len(lat) && at(j).Sub(at(last)) <= gap; j++ {
			switch {
			case lat[j] < 0:
				last, failed = j, failed+1
			case lat[j] > limit:
				last, n, worst = j, n+1, max(worst, lat[j])
			}
		}
		fmt.Fprintf(w, "openloop: stall from %.3fs to %.3fs: %d over %v (the worst %.3fms), %d failed\n",
			at(i).Sub(start).Seconds(), at(last).Sub(start).Seconds(), n, limit, float64(worst)/float64(time.Millisecond), failed)
		i = last
	}
}
