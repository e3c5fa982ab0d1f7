// Package redislimit enforces rate limits and quotas across all nodes with
// Redis: it implements verify.GlobalLimits with one Lua script per check.
//
// Keys, for a prefix P (default "keyward:") and a token id T:
//
//	P rl:{T}          hash: "w" → sub-window width in ns; "<n>" → admissions
//	                  counted in sub-window n (n = floor(unix ns / width))
//	P q:{T}:<period>  string: quota count of one period ("2026-11", "total")
//
// The braces are a Redis Cluster hash tag, so all keys of one token share a
// slot and the script may touch them together.
//
// The rate limit is the conservative sliding-window counter of package
// verify, computed on the time the caller gives (LimitRequest.Now), never on
// Redis's clock, so tests can drive time and every node measures the same
// way. The nodes' clocks must therefore agree to within one sub-window
// (window/verify.Buckets, 3 s for a one-minute window): a node whose clock
// is ahead drops sub-windows that a node whose clock is behind would still
// count, so a larger skew lets the limit be exceeded by what they held.
// Sub-windows later than a node's own are counted, and the hash lives one
// sub-window longer than the rule needs, for the same reason.
//
// A check that starts on Redis after this node stopped waiting for it must
// not consume: the node has then answered without it (the fallback), and
// the check would count an admission that never was. Such checks queue up
// while Redis hangs, and all run when it wakes. Each attempt of a check
// therefore carries the latest moment at which it may consume, on Redis's
// clock (the script reads TIME): the node's own deadline for the attempt,
// shifted by the offset between the node's clock and Redis's that the last
// quick answer showed, less a margin for that estimate's error. Until one
// answer has come quickly, the node knows no offset and sets no bound. A
// check that ran in time but whose answer came too late or not at all
// (Redis stalled right after running it, the connection dropped) has
// consumed: that only denies early.
package redislimit

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keyward/keyward/internal/verify"
	"github.com/redis/go-redis/v9"
)

// DefaultTimeout is the dial, read and write timeout of a Limiter whose
// Options leave them zero. A verification waits at most about this long per
// attempt for Redis instead of hanging.
const DefaultTimeout = 500 * time.Millisecond

// minWidth is the narrowest sub-window. Sub-window numbers are then below
// 2^53 and exact in Lua's float arithmetic; windows under 20 ms are counted
// a little more conservatively than verify's local limiter counts them.
const minWidth = int64(time.Millisecond)

//go:embed check.lua
var checkSource string

// checkScript is run with EVALSHA, and with EVAL when Redis does not have it
// cached (after a restart or SCRIPT FLUSH).
var checkScript = redis.NewScript(checkSource)

// Options configures a Limiter. The zero value is usable.
type Options struct {
	// KeyPrefix starts every key; default "keyward:". It must not contain
	// '{' or '}', which would change the keys' cluster hash tag.
	KeyPrefix string

	// DialTimeout, ReadTimeout and WriteTimeout bound each step of an
	// attempt; zero takes the URL's dial_timeout, read_timeout or
	// write_timeout parameter, or DefaultTimeout. ReadTimeout also bounds
	// the wait for a free pooled connection. Each attempt of a Check, a
	// wait for a connection and a dial included, ends after at most
	// WriteTimeout+ReadTimeout, or earlier at its context's deadline.
	DialTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration

	// PoolSize is the maximum number of connections; zero takes the URL's
	// pool_size or go-redis's default (10 per CPU).
	PoolSize int

	// MaxRetries is how often a Check is tried again, with timeouts of
	// its own, after a connection error (refused, reset) or ErrLate; zero
	// means 1, -1 means none. A check that timed out is not tried again:
	// Redis is slow, and the caller has waited enough. A check tried again
	// after its connection dropped may have run on Redis already, in which
	// case it consumes twice: that only denies early.
	MaxRetries int

	// Log, when set, takes the Redis client's own messages (a dial that
	// failed, say) as warnings, instead of the plain lines go-redis
	// writes to standard error, which would break a JSON log. go-redis
	// has one logger for the process: the last New with a Log sets it.
	Log *slog.Logger
}

// clientLog passes go-redis's messages to a slog.Logger.
type clientLog struct{ log *slog.Logger }

func (l clientLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "redis client", "detail", strings.TrimSpace(fmt.Sprintf(format, v...)))
}

// Limiter is a verify.GlobalLimits on Redis. It is safe for concurrent use.
type Limiter struct {
	rdb     *redis.Client
	prefix  string
	wait    time.Duration // the longest an attempt of a Check waits
	read    time.Duration // the read timeout: an attempt may end this soon
	margin  time.Duration // see lateBound
	retries int           // see Options.MaxRetries
	now     func() time.Time

	// clock is the offset between Redis's clock and this node's that the
	// last answer within margin showed; nil until one has.
	clock atomic.Pointer[clockSample]
}

var _ verify.GlobalLimits = (*Limiter)(nil)

// CheckURL reports what makes rawURL unusable to New, or nil, without
// connecting or resolving anything. The error does not quote rawURL.
func CheckURL(rawURL string) error {
	_, err := parseURL(rawURL)
	return err
}

// parseURL is redis.ParseURL with an error that quotes no part of rawURL
// that may be its password. url.Parse's error quotes the URL whole with %q,
// which escapes a quote, a backslash or a control character: then it is no
// longer the text a caller would scrub, and the password would be shown.
func parseURL(rawURL string) (*redis.Options, error) {
	o, err := redis.ParseURL(rawURL)
	if err != nil && atAfterAuthority(rawURL) {
		// A password that holds a /, ? or # ends the host part there:
		// the rest of the password is read as a port, a path or a query,
		// which the errors quote.
		return nil, errors.New("the URL does not parse: an @ follows a /, ? or # (write one of these in a user name or password as %2F, %3F or %23)")
	}
	var ue *url.Error
	if !errors.As(err, &ue) {
		return o, err
	}
	var ee url.EscapeError
	if errors.As(ue.Err, &ee) {
		// It quotes the escape, which may be in the password.
		return nil, errors.New("the URL does not parse: a % that is not followed by two hex digits (write a % in the password as %25)")
	}
	return nil, fmt.Errorf("the URL does not parse: %w", ue.Err)
}

// atAfterAuthority reports whether rawURL holds an @ after the /, ? or #
// that ends the part after its "//", where a user name and password are.
func atAfterAuthority(rawURL string) bool {
	_, rest, ok := strings.Cut(rawURL, "//")
	if !ok {
		return false
	}
	end := strings.IndexAny(rest, "/?#")
	return end >= 0 && strings.Contains(rest[end:], "@")
}

// New returns a Limiter for the Redis server at url (redis://[user:pass@]
// host:port/db, or rediss:// for TLS). It fails only when url or opts are
// invalid: it does not wait for the server, so that a node starts while
// Redis is down; Check and Ping report that it does not answer. The caller
// must Close the Limiter.
func New(ctx context.Context, url string, opts Options) (*Limiter, error) {
	ro, err := parseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redislimit: %w", err)
	}
	prefix := opts.KeyPrefix
	if prefix == "" {
		prefix = "keyward:"
	}
	if strings.ContainsAny(prefix, "{}") {
		return nil, fmt.Errorf("redislimit: key prefix %q contains a brace", prefix)
	}
	timeout := func(opt, fromURL time.Duration) time.Duration {
		switch {
		case opt != 0:
			return opt
		case fromURL != 0:
			return fromURL
		}
		return DefaultTimeout
	}
	ro.DialTimeout = timeout(opts.DialTimeout, ro.DialTimeout)
	ro.ReadTimeout = timeout(opts.ReadTimeout, ro.ReadTimeout)
	ro.WriteTimeout = timeout(opts.WriteTimeout, ro.WriteTimeout)
	if ro.PoolTimeout == 0 && ro.ReadTimeout > 0 {
		// go-redis waits ReadTimeout+1s for a free connection by default.
		ro.PoolTimeout = ro.ReadTimeout
	}
	if opts.PoolSize != 0 {
		ro.PoolSize = opts.PoolSize
	}
	retries := opts.MaxRetries
	switch {
	case retries == 0:
		retries = 1
	case retries < 0:
		retries = 0
	}
	// Check retries by itself, each attempt with its own bound: go-redis
	// would resend the same script (and bound) after a read timeout, and
	// both copies could consume.
	ro.MaxRetries = -1
	if ro.DialerRetries == 0 {
		// go-redis dials 5 times per attempt, 100 ms apart.
		ro.DialerRetries = 1
	}
	if opts.Log != nil {
		redis.SetLogger(clientLog{opts.Log})
	}
	ro.ContextTimeoutEnabled = true // a caller's shorter deadline wins
	ro.DisableIdentity = true       // no CLIENT SETINFO, which Redis < 7.2 lacks

	// No ping here: a node must start while Redis is down, and fall back
	// until it answers. Check and Ping report the failure.
	wait := ro.WriteTimeout + ro.ReadTimeout
	return &Limiter{
		rdb:     redis.NewClient(ro),
		prefix:  prefix,
		wait:    wait,
		read:    ro.ReadTimeout,
		margin:  ro.ReadTimeout / 5,
		retries: retries,
		now:     time.Now,
	}, nil
}

// Close closes the Limiter's connections. Check must not be called
// afterwards.
func (l *Limiter) Close() error {
	return l.rdb.Close()
}

// Ping reports, as an error, whether the Redis server cannot be reached.
func (l *Limiter) Ping(ctx context.Context) error {
	if err := l.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redislimit: ping: %w", err)
	}
	return nil
}

// Result flags of check.lua.
const (
	flagRateLimited   = 1
	flagQuotaMissing  = 2
	flagQuotaExceeded = 4
	flagLate          = 8
)

// ErrLate is returned by Check when every attempt of the check reached
// Redis after the moment this node stops waiting for it, less a margin:
// Redis then consumed nothing, and the caller answers as if Redis had not
// answered.
var ErrLate = errors.New("redislimit: the check reached Redis too late to count")

// Check runs the rate-limit check and then the quota check of one
// verification atomically on Redis and, when both pass and req.Consume is
// set, consumes one unit of each. A rate limit is enforced when
// req.RateLimit > 0, a quota when req.QuotaLimit > 0; with neither, Check
// answers without asking Redis.
//
// When the rate limit denies, the quota is not checked: the response then
// holds the stored quota count, or max(req.QuotaInit, 0) when there is none,
// and never QuotaMissing. When the window changes between calls, the
// counts of the old sub-windows are carried over to the new width, each no
// earlier than it happened, so a change never admits more; a changed limit
// applies to the counts as they stand.
//
// Check returns an error when Redis does not answer within the Limiter's
// timeouts or ctx. Once one check has been answered quickly, an attempt
// that starts on Redis after this node gave up on it consumes nothing (see
// the package comment).
func (l *Limiter) Check(ctx context.Context, req verify.LimitRequest) (verify.LimitResponse, error) {
	var res verify.LimitResponse
	rate, quota := req.RateLimit > 0, req.QuotaLimit > 0
	if !rate && !quota {
		return res, nil
	}
	if req.TokenID == "" {
		return res, errors.New("redislimit: empty token id")
	}
	if rate && req.RateWindow <= 0 {
		return res, fmt.Errorf("redislimit: rate window %v", req.RateWindow)
	}
	if quota && req.QuotaPeriod == "" {
		return res, errors.New("redislimit: empty quota period")
	}

	now := req.Now.UnixNano()
	window := int64(req.RateWindow)
	width := max(verify.Width(req.RateWindow), minWidth)
	b := floorDiv(now, width)
	var rateLimit, quotaLimit int64
	if rate {
		rateLimit = req.RateLimit
	}
	if quota {
		quotaLimit = req.QuotaLimit
	}
	var quotaTTL int64 // ms; 0 keeps the count until deleted
	if quota && req.QuotaPeriod != "total" && req.QuotaTTL > 0 {
		quotaTTL = ceilMS(int64(req.QuotaTTL))
	}
	consume := "0"
	if req.Consume {
		consume = "1"
	}
	tag := "{" + req.TokenID + "}"
	keys := []string{
		l.prefix + "rl:" + tag,
		l.prefix + "q:" + tag + ":" + req.QuotaPeriod,
	}
	args := []any{
		rateLimit,
		strconv.FormatInt(width, 10),
		strconv.FormatInt(b, 10),
		verify.Buckets,
		// One sub-window beyond the last one counted, for a node whose
		// clock is up to a sub-window ahead.
		ceilMS(window + 2*width),
		quotaLimit,
		req.QuotaInit,
		quotaTTL,
		consume,
		"", // the bound, set by each attempt
	}
	var v []int64
	var err error
	for n := 0; ; n++ {
		v, err = l.attempt(ctx, keys, args)
		if err == nil || n >= l.retries || ctx.Err() != nil || !retryable(err) {
			break
		}
	}
	if err != nil {
		return res, err
	}
	flags, used, oldest := v[0], v[1], v[2]
	res.RateLimited = flags&flagRateLimited != 0
	res.QuotaMissing = flags&flagQuotaMissing != 0
	res.QuotaExceeded = flags&flagQuotaExceeded != 0
	if rate {
		res.RateUsed = used
		if used > 0 {
			res.RateReset = time.Duration((oldest+1)*width + window - now)
		}
	}
	if quota {
		res.QuotaUsed = v[3]
	}
	return res, nil
}

// attempt runs the check script once, with args' last element set to the
// attempt's bound.
func (l *Limiter) attempt(ctx context.Context, keys []string, args []any) ([]int64, error) {
	sent := l.now()
	wait := l.wait
	if d, ok := ctx.Deadline(); ok && time.Until(d) < wait {
		wait = max(time.Until(d), 0)
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	// The attempt may end as early as a read timeout after it was sent
	// (go-redis reads with that deadline once the command is written).
	early := min(wait, l.read)
	args[len(args)-1] = l.lateBound(sent.Add(early), early)
	v, err := checkScript.Run(ctx, l.rdb, keys, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("redislimit: check: %w", err)
	}
	if len(v) != 5 {
		return nil, fmt.Errorf("redislimit: check: script returned %d values", len(v))
	}
	l.noteClock(sent, l.now(), v[4])
	if v[0]&flagLate != 0 {
		return nil, ErrLate
	}
	return v, nil
}

// retryable reports whether a failed attempt may be tried again: after a
// connection error, or ErrLate (nothing was consumed, and the answer told
// the clocks' offset afresh); not after a timeout or an error from Redis
// itself.
func retryable(err error) bool {
	if errors.Is(err, ErrLate) {
		return true
	}
	var rerr redis.Error
	var nerr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.As(err, &nerr) && nerr.Timeout(), errors.As(err, &rerr):
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) ||
		errors.As(err, new(*net.OpError))
}

// lateBound is the last moment, in µs on Redis's clock, at which an attempt
// this node stops waiting for at deadline, after waiting wait, may consume;
// "0" when no offset is known yet. The margin covers the offset's error (at
// most half the round trip it was measured on, see noteClock) and clock
// drift since; for a wait under four margins (a caller's near deadline) it
// shrinks to a quarter of the wait, so that a quick Redis still counts, but
// never below the offset's error and a millisecond.
func (l *Limiter) lateBound(deadline time.Time, wait time.Duration) string {
	c := l.clock.Load()
	if c == nil {
		return "0"
	}
	m := max(min(l.margin, wait/4), c.err+time.Millisecond)
	return strconv.FormatInt(deadline.Add(-m).UnixMicro()+c.offset, 10)
}

// noteClock takes the offset between Redis's clock and this node's from an
// answer sent and received at the times given, whose script read Redis's
// clock at redisUS. Only an answer that came within the margin is taken,
// so that the estimate is off by at most half of it.
func (l *Limiter) noteClock(sent, received time.Time, redisUS int64) {
	rtt := received.Sub(sent)
	if rtt < 0 || rtt > l.margin || redisUS <= 0 {
		return
	}
	mid := sent.Add(rtt / 2).UnixMicro()
	l.clock.Store(&clockSample{offset: redisUS - mid, err: rtt / 2})
}

// clockSample is an estimate of Redis's clock less this node's.
type clockSample struct {
	offset int64         // µs
	err    time.Duration // at most this far off: half the round trip it came from
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// ceilMS converts ns to whole ms, rounding up.
func ceilMS(ns int64) int64 {
	return (ns + int64(time.Millisecond) - 1) / int64(time.Millisecond)
}
