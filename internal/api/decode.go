package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keyward/keyward"
)

// object decodes one JSON object field by field, so that every error names
// its field by JSON pointer and merge patches can tell an absent field from
// null. Unknown fields are errors.
type object struct {
	path   string
	fields map[string]json.RawMessage
	used   map[string]bool
	errs   *[]keyward.FieldError
}

// readBody reads a request body of at most the server's limit. An empty
// body reads as {} when allowEmpty is set. The body is parsed as JSON
// whatever its Content-Type says (curl -d sends a form type): the API takes
// no cookies, so a cross-site form post gains nothing.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, allowEmpty bool) ([]byte, error) {
	buf := bodyPool.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 64<<10 { // large bodies are rare: let them go
			bodyPool.Put(buf)
		}
	}()
	buf.Reset()
	_, err := buf.ReadFrom(io.LimitReader(r.Body, s.maxBody+1))
	if err != nil {
		return nil, keyward.Errorf(keyward.EINVALID, "the request body could not be read")
	}
	if int64(buf.Len()) > s.maxBody {
		return nil, keyward.Errorf(keyward.ETOOLARGE, "the request body exceeds %d bytes", s.maxBody)
	}
	if len(bytes.TrimSpace(buf.Bytes())) == 0 && allowEmpty {
		return []byte("{}"), nil
	}
	return bytes.Clone(buf.Bytes()), nil
}

// bodyPool recycles the buffers request bodies are read into.
var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// decodeObject parses body as a JSON object.
func decodeObject(body []byte) (*object, error) {
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&fields); err != nil || fields == nil {
		return nil, keyward.Invalid(keyward.FieldError{Pointer: "", Detail: "the request body must be a JSON object"})
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, keyward.Invalid(keyward.FieldError{Pointer: "", Detail: "the request body must hold one JSON object and nothing after it"})
	}
	if p := keyward.AmbiguousJSON(body); p != "" {
		// Point at the field that holds it, when one does (a name twice
		// in metadata), rather than at the whole body, and say what that
		// field holds.
		pointer := ""
		for _, name := range slices.Sorted(maps.Keys(fields)) {
			if fp := keyward.AmbiguousJSON(fields[name]); fp != "" {
				pointer, p = "/"+pointerEscape(name), fp
				break
			}
		}
		return nil, keyward.Invalid(keyward.FieldError{Pointer: pointer, Detail: "the request body must not hold " + p + ": parsers read it differently"})
	}
	errs := []keyward.FieldError{}
	return &object{fields: fields, used: map[string]bool{}, errs: &errs}, nil
}

func (o *object) fail(name, format string, args ...any) {
	*o.errs = append(*o.errs, keyward.FieldError{Pointer: o.path + "/" + pointerEscape(name), Detail: fmt.Sprintf(format, args...)})
}

// failAt records an error of element i of the array field name.
func (o *object) failAt(name string, i int, format string, args ...any) {
	*o.errs = append(*o.errs, keyward.FieldError{Pointer: fmt.Sprintf("%s/%s/%d", o.path, pointerEscape(name), i), Detail: fmt.Sprintf(format, args...)})
}

// pointerEscape escapes a name for a JSON pointer (RFC 6901): "~" becomes
// "~0" and "/" becomes "~1".
func pointerEscape(name string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(name)
}

// raw returns a field's JSON and whether it is present.
func (o *object) raw(name string) (json.RawMessage, bool) {
	o.used[name] = true
	v, ok := o.fields[name]
	return v, ok
}

// present reports whether the field is present, null or not.
func (o *object) present(name string) bool {
	_, ok := o.raw(name)
	return ok
}

// isNull reports whether the field is present and null.
func (o *object) isNull(name string) bool {
	v, ok := o.raw(name)
	return ok && string(v) == "null"
}

// noNulls refuses null for each of names: in the object whole, whose
// members are all needed, RFC 7396 would remove the member and leave the
// object incomplete.
func (o *object) noNulls(whole string, names ...string) {
	for _, n := range names {
		if o.isNull(n) {
			o.fail(n, "%s cannot be null: give %s whole, or %s null to remove it", n, whole, whole)
		}
	}
}

// need refuses each of names that is absent, saying why it is needed.
func (o *object) need(why string, names ...string) {
	for _, n := range names {
		if _, ok := o.fields[n]; !ok {
			o.fail(n, "%s is required%s", n, why)
		}
	}
}

// value decodes a present, non-null field into dst, reporting a type error
// as "must be <kind>". It reports whether dst was set.
func (o *object) value(name, kind string, dst any) bool {
	v, ok := o.raw(name)
	if !ok || string(v) == "null" {
		return false
	}
	if err := json.Unmarshal(v, dst); err != nil {
		o.fail(name, "%s must be %s", name, kind)
		return false
	}
	return true
}

func (o *object) str(name string, dst *string) bool { return o.value(name, "a string", dst) }

func (o *object) strs(name string, dst *[]string) bool {
	return o.value(name, "an array of strings", dst)
}

func (o *object) int(name string, dst *int64) bool {
	var f json.Number
	if v, ok := o.fields[name]; ok && len(v) > 0 && v[0] == '"' {
		o.used[name] = true
		o.fail(name, "%s must be an integer", name)
		return false
	}
	if !o.value(name, "an integer", &f) {
		return false
	}
	n, ok := integral(f)
	if !ok {
		o.fail(name, "%s must be an integer", name)
		return false
	}
	*dst = n
	return true
}

// integral returns the value of a JSON number that is a whole number
// within int64, however it is written: 100, 100.0 and 1e2 are all 100, as
// JSON Schema's integer has them (a client's float that holds a count).
func integral(f json.Number) (int64, bool) {
	if n, err := f.Int64(); err == nil {
		return n, true
	}
	// No int64 needs more digits or a larger exponent: bound the work
	// (an exponent of a billion would make a number of a billion digits).
	if len(f) > 400 {
		return 0, false
	}
	if i := strings.IndexAny(string(f), "eE"); i >= 0 {
		if strings.Trim(string(f[:i]), "-0.") == "" {
			return 0, true // zero, whatever its exponent
		}
		if exp, err := strconv.Atoi(string(f[i+1:])); err != nil || exp < -400 || exp > 400 {
			return 0, false
		}
	}
	r, ok := new(big.Rat).SetString(string(f))
	if !ok || !r.IsInt() || !r.Num().IsInt64() {
		return 0, false
	}
	return r.Num().Int64(), true
}

func (o *object) duration(name string, dst *time.Duration) bool {
	var s string
	if !o.value(name, `a duration string such as "30s", "1m" or "24h"`, &s) {
		return false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		o.fail(name, `%s must be a duration string such as "30s", "1m" or "24h"`, name)
		return false
	}
	*dst = d
	return true
}

func (o *object) time(name string, dst *time.Time) bool {
	var s string
	if !o.value(name, "an RFC 3339 time such as \"2026-12-31T23:59:59Z\"", &s) {
		return false
	}
	t, err := keyward.ParseRFC3339(s)
	if err != nil {
		o.fail(name, "%s must be an RFC 3339 time such as \"2026-12-31T23:59:59Z\"", name)
		return false
	}
	*dst = t.UTC().Truncate(time.Microsecond) // as stored (PostgreSQL keeps µs)
	return true
}

// object returns the nested object field name, or nil when absent or null.
func (o *object) object(name string) *object {
	v, ok := o.raw(name)
	if !ok || string(v) == "null" {
		return nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(v, &fields); err != nil || fields == nil {
		o.fail(name, "%s must be an object", name)
		return nil
	}
	return &object{path: o.path + "/" + name, fields: fields, used: map[string]bool{}, errs: o.errs}
}

// done reports unknown fields of o and returns every error gathered so far
// in o's tree, or nil.
func (o *object) done() error {
	var unknown []string
	for k := range o.fields {
		if !o.used[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	for _, k := range unknown {
		o.fail(k, "unknown field %q", k)
	}
	if len(*o.errs) > 0 {
		return keyward.Invalid(*o.errs...)
	}
	return nil
}

// alsoInvalid returns the validation error err (a *keyward.Error
// EINVALID, from decoding) with the field errors of more added, but for
// those at, inside or above a field err has one for: a field that failed
// to decode was left empty, and its emptiness is no second problem. So a
// request learns every invalid field at once, not one per attempt.
func alsoInvalid(err, more error) error {
	var ke, km *keyward.Error
	if !errors.As(err, &ke) || ke.Code != keyward.EINVALID || !errors.As(more, &km) || km.Code != keyward.EINVALID {
		return err
	}
	overlaps := func(a, b string) bool {
		return a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/") || a == "" || b == ""
	}
	fields := slices.Clone(ke.Fields)
	for _, f := range km.Fields {
		if !slices.ContainsFunc(ke.Fields, func(d keyward.FieldError) bool { return overlaps(d.Pointer, f.Pointer) }) {
			fields = append(fields, f)
		}
	}
	if len(fields) == len(ke.Fields) {
		return err
	}
	slices.SortStableFunc(fields, func(a, b keyward.FieldError) int { return strings.Compare(a.Pointer, b.Pointer) })
	return keyward.Invalid(fields...)
}

// renamePointer returns the validation error err with its field errors at
// from moved to to, and a detail that names from's field as the value to's
// gives; any other error unchanged.
func renamePointer(err error, from, to string) error {
	var ke *keyward.Error
	if !errors.As(err, &ke) || ke.Code != keyward.EINVALID {
		return err
	}
	name, as := strings.TrimPrefix(from, "/")+" ", "the "+strings.TrimPrefix(from, "/")+" that "+strings.TrimPrefix(to, "/")+" gives "
	fields := slices.Clone(ke.Fields)
	for i := range fields {
		if fields[i].Pointer == from {
			fields[i].Pointer = to
			if rest, ok := strings.CutPrefix(fields[i].Detail, name); ok {
				fields[i].Detail = as + rest
			}
		}
	}
	msg := ke.Message
	if len(fields) == 1 {
		msg = fields[0].Detail
	}
	return &keyward.Error{Code: ke.Code, Message: msg, Fields: fields}
}
