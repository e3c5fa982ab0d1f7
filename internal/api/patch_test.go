package api

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

// TestOnlyGivenCost: a patch that fails to decode gets the problems of
// the values it gives, and whether the body gives each is found without
// decoding the array it lies in: per element of a long array, that cost
// the square of the body's length (200,000 bad scopes in a 1 MB body held
// a core for minutes). Only the objects on a pointer's way are decoded,
// once per problem under them.
func TestOnlyGivenCost(t *testing.T) {
	var decoded int
	decodeFields = func(data []byte, v any) error {
		decoded += len(data)
		return json.Unmarshal(data, v)
	}
	t.Cleanup(func() { decodeFields = json.Unmarshal })
	const n = 2000
	body := map[string]json.RawMessage{
		"scopes":     json.RawMessage(`[` + strings.Repeat(`"BAD",`, n-1) + `"BAD"]`),
		"rate_limit": json.RawMessage(`{"limit":0}`),
	}
	given := &keyward.Token{Scopes: slices.Repeat([]string{"BAD"}, n), RateLimit: &keyward.RateLimit{}}
	err := onlyGiven(body, given, given.Validate(time.Unix(0, 0)))
	var got []string
	for _, f := range err.(*keyward.Error).Fields {
		got = append(got, f.Pointer)
	}
	// Not /name (required, not given) nor /rate_limit/window (left to
	// the stored token); the elements up to the most a token holds.
	want := []string{"/scopes"}
	for i := range keyward.MaxScopes {
		want = append(want, fmt.Sprintf("/scopes/%d", i))
	}
	want = append(want, "/rate_limit/limit")
	if !slices.Equal(got, want) {
		t.Fatalf("%d pointers, want %d: %v", len(got), len(want), got)
	}
	// The rate_limit object, once for each of its two problems (limit
	// and window); never the array.
	if want := 2 * len(body["rate_limit"]); decoded != want {
		t.Errorf("decoded %d bytes, want %d", decoded, want)
	}
}
