package verify_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/verify"
)

// outageStore is a store whose secret lookups can be made to hang until
// their context ends (a store host that drops packets), and which counts
// them.
type outageStore struct {
	keyward.Store
	mu    sync.Mutex
	calls int
	down  bool          // lookups hang until their context ends
	gate  chan struct{} // when set, lookups first wait for it to close, whatever their context
	asked chan struct{} // when set, told of each lookup
}

func (s *outageStore) LookupSecret(ctx context.Context, digest []byte) (*keyward.Secret, *keyward.Token, error) {
	s.mu.Lock()
	s.calls++
	gate, asked := s.gate, s.asked
	s.mu.Unlock()
	if asked != nil {
		asked <- struct{}{}
	}
	if gate != nil {
		<-gate
	}
	s.mu.Lock()
	down := s.down
	s.mu.Unlock()
	if down {
		<-ctx.Done()
		return nil, nil, ctx.Err()
	}
	return s.Store.LookupSecret(ctx, digest)
}

func (s *outageStore) set(down bool) { s.mu.Lock(); s.down = down; s.mu.Unlock() }
func (s *outageStore) count() int    { s.mu.Lock(); defer s.mu.Unlock(); return s.calls }

// newOutageEngine is an engine over e's store through an outageStore, on
// e's clock. It is not started: only lookups reach the store.
func newOutageEngine(e *env) (*verify.Engine, *outageStore) {
	s := &outageStore{Store: e.store}
	return verify.New(verify.Config{Store: s, Keys: e.keys, Now: e.clock.Now, LookupTimeout: 20 * time.Millisecond}), s
}

// failsAt checks that r failed as a lookup of a store that hangs does,
// after the store was asked want times in all.
func failsAt(t *testing.T, s *outageStore, r verify.Result, want int) {
	t.Helper()
	if r.Outcome != keyward.NotFound || !errors.Is(r.Err, context.DeadlineExceeded) || r.Unlooked {
		t.Fatalf("got %s, Err %v, Unlooked %v; want NOT_FOUND with the lookup's deadline", r.Outcome, r.Err, r.Unlooked)
	}
	if n := s.count(); n != want {
		t.Fatalf("the store was asked %d times, want %d", n, want)
	}
}

// TestLookupRetry: once LookupTrip lookups in a row have failed, lookups
// fail at once without asking the store; one asks it again each
// LookupRetry, the others do not wait for it; the first that succeeds
// lets every lookup through again.
func TestLookupRetry(t *testing.T) {
	e := newEnv(t, verify.Config{})
	_, text1 := e.create(&keyward.Token{})
	_, text2 := e.create(&keyward.Token{})
	eng, s := newOutageEngine(e)
	ctx := context.Background()
	v := func(text string) verify.Result { return eng.Verify(ctx, verify.Request{Token: text}) }
	s.set(true)

	const trip = verify.LookupTrip
	for i := 1; i <= trip; i++ {
		failsAt(t, s, v(text1), i)
	}
	for range 5 {
		failsAt(t, s, v(text1), trip)
	}
	if st := eng.Stats(); st.LookupsSkipped != 5 || st.StoreErrors != trip {
		t.Fatalf("LookupsSkipped %d, StoreErrors %d; want 5 and %d", st.LookupsSkipped, st.StoreErrors, trip)
	}
	e.clock.Add(verify.LookupRetry - time.Millisecond)
	failsAt(t, s, v(text2), trip)

	// The next turn came: one lookup asks, and hangs; the others fail at
	// once meanwhile.
	e.clock.Add(time.Millisecond)
	gate, asked := make(chan struct{}), make(chan struct{}, 1)
	s.mu.Lock()
	s.gate, s.asked = gate, asked
	s.mu.Unlock()
	probe := make(chan verify.Result)
	go func() { probe <- v(text1) }()
	<-asked
	s.mu.Lock()
	s.gate, s.asked = nil, nil
	s.mu.Unlock()
	failsAt(t, s, v(text2), trip+1)
	close(gate)
	failsAt(t, s, <-probe, trip+1)
	// It failed: the next turn is LookupRetry away still.
	s.set(false)
	failsAt(t, s, v(text1), trip+1)

	// The store is back: the next turn's lookup succeeds, and every lookup
	// asks again.
	e.clock.Add(verify.LookupRetry)
	expect(t, v(text1), keyward.Valid)
	if n := s.count(); n != trip+2 {
		t.Fatalf("the store was asked %d times, want %d", n, trip+2)
	}
	expect(t, v(text2), keyward.Valid)
	if n := s.count(); n != trip+3 {
		t.Fatalf("the store was asked %d times, want %d: a success did not end the pause", n, trip+3)
	}
}

// TestLookupRetryCallerGone: lookups whose callers gave up tell nothing of
// the store, and do not count towards LookupTrip.
func TestLookupRetryCallerGone(t *testing.T) {
	e := newEnv(t, verify.Config{})
	_, text := e.create(&keyward.Token{})
	eng, s := newOutageEngine(e)
	s.set(true)
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	const n = verify.LookupTrip + 2
	for range n {
		if r := eng.Verify(gone, verify.Request{Token: text}); r.Err == nil {
			t.Fatalf("a lookup whose caller gave up: %s with no error", r.Outcome)
		}
	}
	for i := 1; i <= verify.LookupTrip; i++ {
		failsAt(t, s, eng.Verify(context.Background(), verify.Request{Token: text}), n+i)
	}
	// Those failed LookupTrip times in a row: the next does not ask.
	failsAt(t, s, eng.Verify(context.Background(), verify.Request{Token: text}), n+verify.LookupTrip)
}

// TestLookupRetryNotFound: a token the store does not hold is an answer,
// not a failure: it neither counts towards LookupTrip nor continues a run
// of failures.
func TestLookupRetryNotFound(t *testing.T) {
	e := newEnv(t, verify.Config{})
	_, text := e.create(&keyward.Token{})
	_, other := e.create(&keyward.Token{})
	eng, s := newOutageEngine(e)
	ctx := context.Background()
	unknown, err := secret.Generate("kw")
	if err != nil {
		t.Fatal(err)
	}
	const trip = verify.LookupTrip
	for i := 1; i <= trip+2; i++ {
		r := eng.Verify(ctx, verify.Request{Token: unknown})
		if r.Outcome != keyward.NotFound || r.Err != nil || r.Unlooked || s.count() != i {
			t.Fatalf("unknown token: %s, Err %v, Unlooked %v, store asked %d times; want NOT_FOUND looked up, asked %d times", r.Outcome, r.Err, r.Unlooked, s.count(), i)
		}
	}
	calls := trip + 2
	for range 2 {
		s.set(true)
		for range trip - 1 {
			calls++
			failsAt(t, s, eng.Verify(ctx, verify.Request{Token: text}), calls)
		}
		s.set(false)
		calls++
		if r := eng.Verify(ctx, verify.Request{Token: unknown}); r.Outcome != keyward.NotFound || r.Err != nil || s.count() != calls {
			t.Fatalf("unknown token: %s, Err %v, store asked %d times; want NOT_FOUND, asked %d times", r.Outcome, r.Err, s.count(), calls)
		}
	}
	expect(t, eng.Verify(ctx, verify.Request{Token: text}), keyward.Valid)
	calls++
	// LookupTrip failures in a row, with no answer between them, do stop
	// the next lookup from asking.
	s.set(true)
	for range trip {
		calls++
		failsAt(t, s, eng.Verify(ctx, verify.Request{Token: other}), calls)
	}
	failsAt(t, s, eng.Verify(ctx, verify.Request{Token: other}), calls)
}

// TestLookupRetryLateFailure: a lookup that began before lookups were
// paused, and fails after, does not put the next turn off.
func TestLookupRetryLateFailure(t *testing.T) {
	e := newEnv(t, verify.Config{})
	_, text := e.create(&keyward.Token{})
	eng, s := newOutageEngine(e)
	ctx := context.Background()
	s.set(true)
	gate, asked := make(chan struct{}), make(chan struct{}, 1)
	s.mu.Lock()
	s.gate, s.asked = gate, asked
	s.mu.Unlock()
	late := make(chan verify.Result)
	go func() { late <- eng.Verify(ctx, verify.Request{Token: text}) }()
	<-asked
	s.mu.Lock()
	s.gate, s.asked = nil, nil
	s.mu.Unlock()

	const trip = verify.LookupTrip
	for i := 1; i <= trip; i++ {
		failsAt(t, s, eng.Verify(ctx, verify.Request{Token: text}), 1+i)
	}
	e.clock.Add(verify.LookupRetry - 100*time.Millisecond)
	close(gate)
	failsAt(t, s, <-late, 1+trip)
	e.clock.Add(100 * time.Millisecond)
	failsAt(t, s, eng.Verify(ctx, verify.Request{Token: text}), 2+trip)
}

// TestLookupRetryClockBack: the wall clock steps back an hour while lookups
// are paused. The next turn, set before the step, is then an hour and
// LookupRetry away: it is taken at once instead, and then each
// LookupRetry on the clock as it now reads.
func TestLookupRetryClockBack(t *testing.T) {
	e := newEnv(t, verify.Config{})
	_, text := e.create(&keyward.Token{})
	eng, s := newOutageEngine(e)
	ctx := context.Background()
	s.set(true)
	const trip = verify.LookupTrip
	for i := 1; i <= trip; i++ {
		failsAt(t, s, eng.Verify(ctx, verify.Request{Token: text}), i)
	}
	failsAt(t, s, eng.Verify(ctx, verify.Request{Token: text}), trip)
	e.clock.Add(-time.Hour)
	failsAt(t, s, eng.Verify(ctx, verify.Request{Token: text}), trip+1)
	failsAt(t, s, eng.Verify(ctx, verify.Request{Token: text}), trip+1)
	s.set(false)
	e.clock.Add(verify.LookupRetry)
	expect(t, eng.Verify(ctx, verify.Request{Token: text}), keyward.Valid)
	if n := s.count(); n != trip+2 {
		t.Fatalf("the store was asked %d times, want %d", n, trip+2)
	}
}

// TestLookupRetryProbeBudgetSpent: lookups are paused, the store is back,
// and the lookup whose turn it is asks it under the current key, which
// answers not found, then has no budget left to ask under the previous
// key. The store answered: that ends the pause, rather than leave it on
// while made-up tokens (which take most turns during a flood) spend the
// budget.
func TestLookupRetryProbeBudgetSpent(t *testing.T) {
	e := newEnv(t, verify.Config{})
	keys, err := secret.NewKeyring(secretB, secretA)
	if err != nil {
		t.Fatal(err)
	}
	s := &outageStore{Store: e.store}
	eng := verify.New(verify.Config{Store: s, Keys: keys, Now: e.clock.Now, LookupTimeout: 20 * time.Millisecond, LookupBudget: 1})
	ctx := context.Background()
	unknown := func(unbudgeted bool) verify.Result {
		text, err := secret.Generate("kw")
		if err != nil {
			t.Fatal(err)
		}
		return eng.Verify(ctx, verify.Request{Token: text, Unbudgeted: unbudgeted})
	}
	s.set(true)
	for i := 1; i <= verify.LookupTrip; i++ {
		failsAt(t, s, unknown(true), i)
	}
	failsAt(t, s, unknown(true), verify.LookupTrip)

	s.set(false)
	e.clock.Add(verify.LookupRetry)
	if r := unknown(false); r.Outcome != keyward.NotFound || r.Err != nil || !r.Unlooked || s.count() != verify.LookupTrip+1 {
		t.Fatalf("the turn's lookup: %s, Err %v, Unlooked %v, store asked %d times; want NOT_FOUND unlooked after asking once more", r.Outcome, r.Err, r.Unlooked, s.count())
	}
	if r := unknown(true); r.Outcome != keyward.NotFound || r.Err != nil || r.Unlooked {
		t.Fatalf("the next lookup: %s, Err %v, Unlooked %v; want NOT_FOUND looked up: the store answered the turn's", r.Outcome, r.Err, r.Unlooked)
	}
}

// heldStore is a store whose secret lookups fail at once while fail is
// set, and, while hold is set, wait for release and then fail: lookups
// held on connections to a host that went away, which end in an error
// only after the host is back.
type heldStore struct {
	keyward.Store
	mu         sync.Mutex
	calls      int
	fail, hold bool
	release    chan struct{}
	asked      chan struct{}
}

var errGone = errors.New("connection reset by peer")

func (s *heldStore) LookupSecret(ctx context.Context, digest []byte) (*keyward.Secret, *keyward.Token, error) {
	s.mu.Lock()
	s.calls++
	fail, hold := s.fail, s.hold
	s.mu.Unlock()
	switch {
	case fail:
		return nil, nil, errGone
	case hold:
		s.asked <- struct{}{}
		<-s.release
		return nil, nil, errGone
	}
	return s.Store.LookupSecret(ctx, digest)
}

func (s *heldStore) set(fail, hold bool) { s.mu.Lock(); s.fail, s.hold = fail, hold; s.mu.Unlock() }
func (s *heldStore) count() int          { s.mu.Lock(); defer s.mu.Unlock(); return s.calls }

// TestLookupRetryStaleFailures: lookups are paused; the turns' lookups
// hang on a host that went away; the store is back and the next turn's
// lookup succeeds, which lets every lookup through. The hung lookups then
// fail, LookupTrip of them in a row: they began before the store was seen
// answering, and tell nothing newer, so they do not pause lookups again.
func TestLookupRetryStaleFailures(t *testing.T) {
	e := newEnv(t, verify.Config{})
	_, text := e.create(&keyward.Token{})
	_, other := e.create(&keyward.Token{})
	s := &heldStore{Store: e.store, release: make(chan struct{}), asked: make(chan struct{}, verify.LookupTrip)}
	eng := verify.New(verify.Config{Store: s, Keys: e.keys, Now: e.clock.Now, LookupTimeout: time.Minute})
	ctx := context.Background()
	v := func(text string) verify.Result { return eng.Verify(ctx, verify.Request{Token: text}) }
	const trip = verify.LookupTrip
	s.set(true, false)
	for range trip {
		if r := v(text); !errors.Is(r.Err, errGone) {
			t.Fatalf("store failing: %s, Err %v", r.Outcome, r.Err)
		}
	}
	s.set(false, true)
	held := make(chan verify.Result, trip)
	for range trip {
		e.clock.Add(verify.LookupRetry)
		go func() { held <- v(text) }()
		<-s.asked
	}
	s.set(false, false)
	e.clock.Add(verify.LookupRetry)
	expect(t, v(text), keyward.Valid)
	close(s.release)
	for range trip {
		if r := <-held; !errors.Is(r.Err, errGone) {
			t.Fatalf("a held lookup: %s, Err %v", r.Outcome, r.Err)
		}
	}
	calls := s.count()
	if r := v(other); r.Outcome != keyward.Valid || s.count() != calls+1 {
		t.Fatalf("after the held lookups failed: %s, Err %v, store asked %d more times; want VALID, asked once", r.Outcome, r.Err, s.count()-calls)
	}
}

// TestLookupRetryEndedBySync: a read of the change feed that succeeds
// ends a pause at once, without waiting for the next turn, or for a
// lookup to take it.
func TestLookupRetryEndedBySync(t *testing.T) {
	e := newEnv(t, verify.Config{})
	_, text := e.create(&keyward.Token{})
	eng, s := newOutageEngine(e)
	ctx := context.Background()
	v := func(text string) verify.Result { return eng.Verify(ctx, verify.Request{Token: text}) }
	s.set(true)
	const trip = verify.LookupTrip
	for i := 1; i <= trip; i++ {
		failsAt(t, s, v(text), i)
	}
	failsAt(t, s, v(text), trip) // paused: the store is not asked

	// The store is back; its change feed answers before the next turn.
	s.set(false)
	if err := eng.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// A token the feed's read did not bring into the cache: only a
	// lookup finds it.
	_, later := e.create(&keyward.Token{})
	if r := v(later); r.Outcome != keyward.Valid || r.Err != nil {
		t.Fatalf("after a good read of the feed: %s, Err %v; want VALID", r.Outcome, r.Err)
	}
	if n := s.count(); n != trip+1 {
		t.Fatalf("the store was asked %d times, want %d", n, trip+1)
	}
}
