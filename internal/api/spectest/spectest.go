// Package spectest holds the OpenAPI document to what the server answers,
// for tests: Check validates one response against the document's operation
// for its request, and Transport does so for every response a test's HTTP
// client reads. Its status must be documented, its media type too, and a
// JSON body must validate against the schema given for them, so that a
// drift between the document and the server fails the test that met it.
package spectest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/keyward/keyward/internal/api"
)

// spec is openapi.json, compiled once for all tests.
var spec struct {
	once   sync.Once
	err    error
	doc    map[string]any
	c      *jsonschema.Compiler
	mu     sync.Mutex
	cache  map[string]*jsonschema.Schema
	routes []specRoute
}

// specRoute is one operation of the document, with its path template as a
// regular expression.
type specRoute struct {
	method, path string
	re           *regexp.Regexp
	params       int
}

const specURL = "https://keyward.invalid/openapi.json"

func loadSpec() error {
	spec.once.Do(func() {
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(api.OpenAPI()))
		if err != nil {
			spec.err = err
			return
		}
		spec.doc = doc.(map[string]any)
		spec.c = jsonschema.NewCompiler()
		// OpenAPI 3.1's schemas are JSON Schema 2020-12.
		spec.c.DefaultDraft(jsonschema.Draft2020)
		spec.c.AssertFormat()
		if spec.err = spec.c.AddResource(specURL, doc); spec.err != nil {
			return
		}
		spec.cache = map[string]*jsonschema.Schema{}
		paths, _ := spec.doc["paths"].(map[string]any)
		for path, v := range paths {
			item, _ := v.(map[string]any)
			params := strings.Count(path, "{")
			re := regexp.MustCompile("^" + regexp.MustCompile(`\\\{[^}]*\\\}`).ReplaceAllString(regexp.QuoteMeta(path), `[^/]+`) + "$")
			for _, m := range []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"} {
				if _, ok := item[m]; ok {
					spec.routes = append(spec.routes, specRoute{method: strings.ToUpper(m), path: path, re: re, params: params})
				}
			}
		}
		// Literal paths before templated ones: /v1/usage/events is not
		// a token's usage.
		sort.Slice(spec.routes, func(i, j int) bool { return spec.routes[i].params < spec.routes[j].params })
	})
	return spec.err
}

// specSchema compiles the schema at a JSON pointer of the document.
func specSchema(ptr string) (*jsonschema.Schema, error) {
	spec.mu.Lock()
	defer spec.mu.Unlock()
	if s, ok := spec.cache[ptr]; ok {
		return s, nil
	}
	s, err := spec.c.Compile(specURL + "#" + ptr)
	if err != nil {
		return nil, err
	}
	spec.cache[ptr] = s
	return s, nil
}

// specAt returns the value at a JSON pointer of the document.
func specAt(ptr string) (any, bool) {
	var cur any = spec.doc
	for _, seg := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		seg = strings.ReplaceAll(strings.ReplaceAll(seg, "~1", "/"), "~0", "~")
		switch c := cur.(type) {
		case map[string]any:
			var ok bool
			if cur, ok = c[seg]; !ok {
				return nil, false
			}
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(c) {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// pointerEscape escapes a JSON pointer token (RFC 6901).
func pointerEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// Check reports how the response to req (status, header, body) departs
// from the document, or nil. A method that a documented path does not
// take must answer the document's MethodNotAllowed, with an Allow that
// lists the path's operations; a path the document does not give is not
// its to judge.
func Check(req *http.Request, status int, header http.Header, body []byte) error {
	if err := loadSpec(); err != nil {
		return fmt.Errorf("openapi.json: %v", err)
	}
	var rt *specRoute
	for i := range spec.routes {
		if r := &spec.routes[i]; r.method == req.Method && r.re.MatchString(req.URL.Path) {
			rt = r
			break
		}
	}
	var ptr string
	if rt == nil {
		// A method the path does not take: 405 with Allow, as the
		// document's MethodNotAllowed gives it.
		other := pathRoute(req.URL.Path)
		if other == nil {
			return nil
		}
		if status != http.StatusMethodNotAllowed {
			return fmt.Errorf("%s %s: a method the path does not take answered %d, not 405", req.Method, other.path, status)
		}
		if err := checkAllow(other.path, header.Get("Allow")); err != nil {
			return fmt.Errorf("%s %s 405: %v", req.Method, other.path, err)
		}
		rt = &specRoute{method: req.Method, path: other.path}
		ptr = methodNotAllowed
	} else {
		op := "/paths/" + pointerEscape(rt.path) + "/" + strings.ToLower(rt.method) + "/responses/"
		ptr = op + strconv.Itoa(status)
		if _, ok := specAt(ptr); !ok {
			ptr = op + "default"
			if _, ok := specAt(ptr); !ok {
				return fmt.Errorf("%s %s: status %d is not documented", rt.method, rt.path, status)
			}
		}
	}
	res, ok := specAt(ptr)
	if !ok {
		return fmt.Errorf("%s %s %d: the document has no %s", rt.method, rt.path, status, ptr)
	}
	if ref, ok := res.(map[string]any)["$ref"].(string); ok {
		ptr = strings.TrimPrefix(ref, "#")
		res, _ = specAt(ptr)
	}
	if err := checkHeaders(ptr, res.(map[string]any), header); err != nil {
		return fmt.Errorf("%s %s %d: %v", rt.method, rt.path, status, err)
	}
	if err := checkRequestBody(req, "/paths/"+pointerEscape(rt.path)+"/"+strings.ToLower(rt.method), status); err != nil {
		return fmt.Errorf("%s %s %d: %v", rt.method, rt.path, status, err)
	}
	if err := checkQuery(req, rt.path, status); err != nil {
		return fmt.Errorf("%s %s %d: %v", rt.method, rt.path, status, err)
	}
	content, _ := res.(map[string]any)["content"].(map[string]any)
	if req.Method == http.MethodHead || len(body) == 0 && len(content) == 0 {
		// The answer to HEAD is its headers (RFC 9110 §9.3.2): the
		// body its media type would describe is never sent.
		return nil
	}
	ct := header.Get("Content-Type")
	base, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return fmt.Errorf("%s %s %d: Content-Type %q: %v", rt.method, rt.path, status, ct, err)
	}
	key := ""
	for k := range content {
		if kb, _, err := mime.ParseMediaType(k); err == nil && kb == base {
			key = k
			break
		}
	}
	if key == "" {
		return fmt.Errorf("%s %s %d: media type %s is not documented", rt.method, rt.path, status, base)
	}
	if base != "application/json" && base != "application/problem+json" {
		return nil
	}
	sch, err := specSchema(ptr + "/content/" + pointerEscape(key) + "/schema")
	if err != nil {
		return fmt.Errorf("%s %s %d: schema: %v", rt.method, rt.path, status, err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s %s %d: body is not JSON: %v", rt.method, rt.path, status, err)
	}
	if err := sch.Validate(v); err != nil {
		return fmt.Errorf("%s %s %d: the body does not match the document: %v\n%s", rt.method, rt.path, status, err, body)
	}
	if extra := undocumentedFields(ptr+"/content/"+pointerEscape(key)+"/schema", v, ""); len(extra) > 0 {
		return fmt.Errorf("%s %s %d: the body has fields the document does not give: %s\n%s", rt.method, rt.path, status, strings.Join(extra, ", "), body)
	}
	return nil
}

// undocumentedFields returns the JSON pointers (under at) of the members
// of v that the schema at ptr does not name: the document's schemas leave
// objects open, so that a client generated from it takes a field added
// later, and validation alone would let a field the server answers and
// the document lacks (or misspells) pass. A schema that names its other
// members (additionalProperties, patternProperties), or that names none
// (an object of the caller's own keys), takes any. Properties
// are gathered through $ref, allOf, anyOf and oneOf: a member that any
// branch names is documented.
func undocumentedFields(ptr string, v any, at string) []string {
	var extra []string
	switch v := v.(type) {
	case map[string]any:
		props := map[string]string{} // name: pointer of its schema
		open, closed := false, false
		walkSchema(ptr, func(p string, s map[string]any) {
			if ap, ok := s["additionalProperties"]; ok && ap != false {
				open = true
			}
			if _, ok := s["patternProperties"]; ok {
				open = true
			}
			ps, named := s["properties"].(map[string]any)
			closed = closed || named
			for name := range ps {
				props[name] = p + "/properties/" + pointerEscape(name)
			}
		})
		names := make([]string, 0, len(v))
		for name := range v {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			sp, ok := props[name]
			if !ok {
				if closed && !open {
					extra = append(extra, at+"/"+pointerEscape(name))
				}
				continue
			}
			extra = append(extra, undocumentedFields(sp, v[name], at+"/"+pointerEscape(name))...)
		}
	case []any:
		var items []string
		walkSchema(ptr, func(p string, s map[string]any) {
			if _, ok := s["items"].(map[string]any); ok {
				items = append(items, p+"/items")
			}
		})
		for i, x := range v {
			for _, ip := range items {
				extra = append(extra, undocumentedFields(ip, x, fmt.Sprintf("%s/%d", at, i))...)
			}
		}
	}
	return extra
}

// walkSchema calls fn with the schema at ptr and every schema it takes in
// through $ref, allOf, anyOf and oneOf, each with its pointer.
func walkSchema(ptr string, fn func(ptr string, s map[string]any)) {
	seen := map[string]bool{}
	var walk func(ptr string)
	walk = func(ptr string) {
		if seen[ptr] {
			return
		}
		seen[ptr] = true
		v, _ := specAt(ptr)
		s, ok := v.(map[string]any)
		if !ok {
			return
		}
		fn(ptr, s)
		if ref, ok := s["$ref"].(string); ok && strings.HasPrefix(ref, "#") {
			walk(strings.TrimPrefix(ref, "#"))
		}
		for _, k := range []string{"allOf", "anyOf", "oneOf"} {
			list, _ := s[k].([]any)
			for i := range list {
				walk(fmt.Sprintf("%s/%s/%d", ptr, k, i))
			}
		}
	}
	walk(ptr)
}

// methodNotAllowed is the pointer of the response to a method a path does
// not take.
const methodNotAllowed = "/components/responses/MethodNotAllowed"

// pathRoute returns the first operation (the most specific path first) whose
// path template matches path, whatever its method, or nil.
func pathRoute(path string) *specRoute {
	for i := range spec.routes {
		if r := &spec.routes[i]; r.re.MatchString(path) {
			return r
		}
	}
	return nil
}

// checkAllow reports an Allow header that does not list exactly the
// methods the document gives the path.
func checkAllow(path, allow string) error {
	var want, got []string
	for _, r := range spec.routes {
		if r.path == path {
			want = append(want, r.method)
		}
	}
	for _, m := range strings.Split(allow, ",") {
		if m = strings.TrimSpace(m); m != "" {
			got = append(got, m)
		}
	}
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		return fmt.Errorf("Allow is %q; the document gives the path %s", allow, strings.Join(want, ", "))
	}
	return nil
}

// Transport returns a RoundTripper that sends with base (nil: the
// default transport), reads each response whole and fails tb (without
// stopping it) where the response departs from the document.
func Transport(tb testing.TB, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return roundTripper{tb: tb, base: base}
}

type roundTripper struct {
	tb   testing.TB
	base http.RoundTripper
}

func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := rt.base.RoundTrip(req)
	if err != nil {
		return res, err
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return nil, err
	}
	res.Body = io.NopCloser(bytes.NewReader(b))
	if err := Check(req, res.StatusCode, res.Header, b); err != nil {
		rt.tb.Errorf("the response departs from openapi.json: %v", err)
	}
	return res, nil
}

// checkedHeaders are the response headers a client acts on: a response
// that carries one must document it, so that a client generated from the
// document reads it.
var checkedHeaders = []string{"Location", "WWW-Authenticate", "Retry-After", "Allow", "Content-Disposition", "RateLimit", "RateLimit-Policy", "X-Request-Id", "Cache-Control"}

// checkHeaders reports a checked header that the response at ptr (res)
// carries and does not document, a documented required header it lacks,
// and a documented header whose value does not match its schema.
func checkHeaders(ptr string, res map[string]any, header http.Header) error {
	documented := map[string]string{} // canonical name: pointer of its schema
	hs, _ := res["headers"].(map[string]any)
	for name, v := range hs {
		hptr := ptr + "/headers/" + pointerEscape(name)
		h, _ := v.(map[string]any)
		if ref, ok := h["$ref"].(string); ok {
			hptr = strings.TrimPrefix(ref, "#")
			r, _ := specAt(hptr)
			h, _ = r.(map[string]any)
		}
		canon := http.CanonicalHeaderKey(name)
		documented[canon] = hptr + "/schema"
		if h["required"] == true && len(header.Values(canon)) == 0 {
			return fmt.Errorf("the required header %s is missing", canon)
		}
	}
	for _, name := range checkedHeaders {
		vs := header.Values(name)
		if len(vs) == 0 {
			continue
		}
		sptr, ok := documented[http.CanonicalHeaderKey(name)]
		if !ok {
			return fmt.Errorf("the header %s (%q) is not documented", name, vs)
		}
		if _, ok := specAt(sptr); !ok {
			continue
		}
		sch, err := specSchema(sptr)
		if err != nil {
			return fmt.Errorf("header %s: schema: %v", name, err)
		}
		var v any = vs[0]
		if n, err := strconv.ParseInt(vs[0], 10, 64); err == nil {
			if s, _ := specAt(sptr + "/type"); s == "integer" {
				v = json.Number(strconv.FormatInt(n, 10))
			}
		}
		if err := sch.Validate(v); err != nil {
			return fmt.Errorf("the header %s: %q does not match the document: %v", name, vs[0], err)
		}
	}
	return nil
}

// checkRequestBody reports a request body that the server took (a 2xx
// answer) and that does not match the operation's (at op) request body
// schema: a client generated from the document could not send it, or
// the document refuses what the server accepts. A body the server refused
// is not judged: the schema cannot say everything the server checks.
func checkRequestBody(req *http.Request, op string, status int) error {
	if status < 200 || status > 299 || req.GetBody == nil {
		return nil
	}
	content, ok := specAt(op + "/requestBody/content")
	if !ok {
		return nil
	}
	rc, err := req.GetBody()
	if err != nil {
		return nil
	}
	b, err := io.ReadAll(rc)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	base, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))
	key := ""
	for k := range content.(map[string]any) {
		if kb, _, err := mime.ParseMediaType(k); err == nil && kb == base {
			key = k
		}
	}
	if key == "" {
		// The JSON API reads its body as JSON whatever its Content-Type.
		if _, ok := content.(map[string]any)["application/json"]; !ok {
			return fmt.Errorf("the request's media type %q is not documented", base)
		}
		key = "application/json"
	}
	var v any
	switch key {
	case "application/x-www-form-urlencoded":
		form, err := url.ParseQuery(string(b))
		if err != nil {
			return fmt.Errorf("the request body is no form: %v", err)
		}
		m := map[string]any{}
		for k, vs := range form {
			m[k] = vs[0]
		}
		v = m
	default:
		if v, err = jsonschema.UnmarshalJSON(bytes.NewReader(b)); err != nil {
			return fmt.Errorf("the request body is not JSON: %v", err)
		}
	}
	sch, err := specSchema(op + "/requestBody/content/" + pointerEscape(key) + "/schema")
	if err != nil {
		return fmt.Errorf("request schema: %v", err)
	}
	if err := sch.Validate(v); err != nil {
		return fmt.Errorf("the server took a request body that does not match the document: %v\n%s", err, b)
	}
	return nil
}

// checkQuery reports a query parameter of a request the server took (a
// 2xx answer) that the operation at path does not document, or whose
// value does not match its schema. A request the server refused is not
// judged, nor is an empty value (read as not given), nor are the
// parameters of the public routes, which read none.
func checkQuery(req *http.Request, path string, status int) error {
	if status < 200 || status > 299 || req.URL.RawQuery == "" {
		return nil
	}
	item := "/paths/" + pointerEscape(path)
	params := map[string]string{} // name: pointer of its schema
	for _, list := range []string{item + "/parameters", item + "/" + strings.ToLower(req.Method) + "/parameters"} {
		ps, _ := specAt(list)
		all, _ := ps.([]any)
		for i, p := range all {
			ptr := fmt.Sprintf("%s/%d", list, i)
			pm, _ := p.(map[string]any)
			if ref, ok := pm["$ref"].(string); ok {
				ptr = strings.TrimPrefix(ref, "#")
				r, _ := specAt(ptr)
				pm, _ = r.(map[string]any)
			}
			if pm["in"] == "query" {
				params[fmt.Sprint(pm["name"])] = ptr + "/schema"
			}
		}
	}
	q, err := url.ParseQuery(req.URL.RawQuery)
	if err != nil {
		return fmt.Errorf("the query does not parse: %v", err)
	}
	for name, vs := range q {
		sptr, ok := params[name]
		switch {
		case vs[0] == "":
			continue
		case !ok && !strings.HasPrefix(path, "/v1/"):
			continue
		case !ok:
			return fmt.Errorf("the server took the query parameter %q, which the document does not give", name)
		}
		sch, err := specSchema(sptr)
		if err != nil {
			return fmt.Errorf("parameter %s: schema: %v", name, err)
		}
		var v any = vs[0]
		if t, _ := specAt(sptr + "/type"); t == "integer" {
			if _, err := strconv.ParseInt(vs[0], 10, 64); err == nil {
				v = json.Number(vs[0])
			}
		}
		if err := sch.Validate(v); err != nil {
			return fmt.Errorf("the server took the query parameter %s=%q, which does not match the document: %v", name, vs[0], err)
		}
	}
	return nil
}
