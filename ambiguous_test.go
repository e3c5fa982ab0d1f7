package keyward_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/keyward/keyward"
)

// ambiguousRef is AmbiguousJSON written the slow, plain way, on
// encoding/json's tokens, to check the one-pass scanner against.
func ambiguousRef(b []byte) bool {
	if strings.Contains(string(b), `\ud800`) || strings.Contains(string(b), `\udc00`) {
		return true // the generator's lone surrogates
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	type object struct {
		names map[string]bool
		name  bool
	}
	var stack []*object
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *object
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.name {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			name := tok.(string)
			if top.names[name] {
				return true
			}
			top.names[name] = true
			top.name = false
			continue
		}
		if top != nil {
			top.name = true
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				stack = append(stack, &object{names: map[string]bool{}, name: true})
			case '[':
				stack = append(stack, nil)
			default:
				stack = stack[:len(stack)-1]
			}
		case json.Number:
			if _, err := strconv.ParseFloat(string(v), 64); err != nil {
				return true
			}
		}
	}
}

// TestAmbiguousJSONMatchesReference: on random JSON full of near misses
// (names alike but for an escape, numbers at the edge of a float64,
// strings holding ':' and quotes), the scanner finds a problem exactly
// when the reference does.
func TestAmbiguousJSONMatchesReference(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 11))
	names := []string{`"a"`, `"b"`, `"\u0061"`, `"a:"`, `"\"q"`, `"\\"`, `"x y"`}
	strs := []string{`"a"`, `"v:"`, `"\"a\": 1"`, `"\ud83d\ude00"`, `"\ud800"`, `""`, `"{\"a\":1,\"a\":2}"`}
	nums := []string{"0", "-1", "1.5", "1e308", "1.8e308", "1e400", "-2e308", "1e-400", "12345678901234567890", "1E3"}
	var value func(depth int) string
	value = func(depth int) string {
		switch r := rnd.IntN(6); {
		case r == 0 && depth < 4:
			n := rnd.IntN(4)
			var b strings.Builder
			b.WriteString("{")
			for i := 0; i < n; i++ {
				if i > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "%s : %s", names[rnd.IntN(len(names))], value(depth+1))
			}
			b.WriteString("}")
			return b.String()
		case r == 1 && depth < 4:
			n := rnd.IntN(4)
			parts := make([]string, n)
			for i := range parts {
				parts[i] = value(depth + 1)
			}
			return "[" + strings.Join(parts, ",") + "]"
		case r == 2:
			return nums[rnd.IntN(len(nums))]
		case r == 3:
			return []string{"true", "false", "null"}[rnd.IntN(3)]
		default:
			return strs[rnd.IntN(len(strs))]
		}
	}
	found := 0
	for i := 0; i < 20000; i++ {
		doc := value(0)
		if !json.Valid([]byte(doc)) {
			t.Fatalf("the generator made invalid JSON: %s", doc)
		}
		want := ambiguousRef([]byte(doc))
		if got := keyward.AmbiguousJSON([]byte(doc)) != ""; got != want {
			t.Fatalf("AmbiguousJSON(%s) found a problem: %v, the reference: %v", doc, got, want)
		}
		if want {
			found++
		}
	}
	if found < 1000 {
		t.Fatalf("only %d of 20000 documents had a problem: the generator tests too little", found)
	}
}

// BenchmarkAmbiguousJSON: the cost of the check on a typical create body,
// which every API request body pays once more.
func BenchmarkAmbiguousJSON(b *testing.B) {
	body := []byte(`{"name":"ci deploy","scopes":["orders:read","orders:write"],"expires_in":"720h","rate_limit":{"limit":100,"window":"1m"},"metadata":{"team":"payments","owner":"ana@example.com","n":3}}`)
	b.ReportAllocs()
	for b.Loop() {
		if keyward.AmbiguousJSON(body) != "" {
			b.Fatal("a problem in a plain body")
		}
	}
}

// BenchmarkAmbiguousJSONReference is the reference on the same body: the
// baseline BenchmarkAmbiguousJSON is read against.
func BenchmarkAmbiguousJSONReference(b *testing.B) {
	body := []byte(`{"name":"ci deploy","scopes":["orders:read","orders:write"],"expires_in":"720h","rate_limit":{"limit":100,"window":"1m"},"metadata":{"team":"payments","owner":"ana@example.com","n":3}}`)
	b.ReportAllocs()
	for b.Loop() {
		if ambiguousRef(body) {
			b.Fatal("a problem in a plain body")
		}
	}
}
