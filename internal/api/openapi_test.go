package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/keyward/keyward"
)

// openAPIMethods are the keys of an OpenAPI path item that name operations.
var openAPIMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

func parseOpenAPI(t *testing.T) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.json does not parse: %v", err)
	}
	return doc
}

// docOperation returns the operation for method and path, or nil.
func docOperation(doc map[string]any, method, path string) map[string]any {
	paths, _ := doc["paths"].(map[string]any)
	item, _ := paths[path].(map[string]any)
	op, _ := item[strings.ToLower(method)].(map[string]any)
	return op
}

// docOperations lists every operation of the document as "METHOD path".
func docOperations(doc map[string]any) []string {
	var ops []string
	paths, _ := doc["paths"].(map[string]any)
	for path, v := range paths {
		item, _ := v.(map[string]any)
		for _, m := range openAPIMethods {
			if _, ok := item[m]; ok {
				ops = append(ops, strings.ToUpper(m)+" "+path)
			}
		}
	}
	sort.Strings(ops)
	return ops
}

// resolveRef follows a local reference such as "#/components/schemas/Token".
func resolveRef(doc map[string]any, ref string) (any, bool) {
	if !strings.HasPrefix(ref, "#/components/") {
		return nil, false
	}
	var cur any = doc
	for _, seg := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		seg = strings.ReplaceAll(strings.ReplaceAll(seg, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[seg]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// unresolvedRefs returns every $ref of the document that does not name an
// existing component.
func unresolvedRefs(doc map[string]any) []string {
	var bad []string
	var walk func(at string, v any)
	walk = func(at string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if k == "$ref" {
					ref, _ := x.(string)
					if _, ok := resolveRef(doc, ref); !ok {
						bad = append(bad, fmt.Sprintf("%s: %q", at, ref))
					}
					continue
				}
				walk(at+"/"+k, x)
			}
		case []any:
			for i, x := range v {
				walk(fmt.Sprintf("%s/%d", at, i), x)
			}
		}
	}
	walk("", doc)
	sort.Strings(bad)
	return bad
}

var pathParam = regexp.MustCompile(`\{([^}]+)\}`)

// pathParams returns the names of the path parameters declared for an
// operation, on its path item or on the operation itself.
func pathParams(doc map[string]any, path string, op map[string]any) []string {
	paths, _ := doc["paths"].(map[string]any)
	item, _ := paths[path].(map[string]any)
	var names []string
	for _, list := range []any{item["parameters"], op["parameters"]} {
		params, _ := list.([]any)
		for _, p := range params {
			pm, _ := p.(map[string]any)
			if ref, ok := pm["$ref"].(string); ok {
				r, _ := resolveRef(doc, ref)
				pm, _ = r.(map[string]any)
			}
			if pm["in"] == "path" && pm["required"] == true {
				names = append(names, fmt.Sprint(pm["name"]))
			}
		}
	}
	sort.Strings(names)
	return names
}

// checkRoute returns every way in which the document's operation for rt
// differs from the route.
func checkRoute(doc map[string]any, rt route) []string {
	op := docOperation(doc, rt.Method, rt.Path)
	if op == nil {
		return []string{fmt.Sprintf("openapi.json has no operation %s %s", rt.Method, rt.Path)}
	}
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }

	if id, _ := op["operationId"].(string); id == "" {
		fail("no operationId")
	}
	if sum, _ := op["summary"].(string); sum == "" || strings.Contains(sum, "\n") {
		fail("summary %q is not one line of text", sum)
	}
	scope, hasScope := op["x-required-scope"]
	switch {
	case rt.Scope == "" && hasScope:
		fail("public route has x-required-scope %v", scope)
	case rt.Scope != "" && scope != rt.Scope:
		fail("x-required-scope is %v, the route needs %q", scope, rt.Scope)
	}
	if rt.Scope != "" {
		if desc, _ := op["description"].(string); !strings.Contains(desc, "`"+rt.Scope+"`") {
			fail("description does not state the scope `%s`: %q", rt.Scope, desc)
		}
	}

	sec, ok := op["security"].([]any)
	switch {
	case !ok:
		fail("no security array on the operation")
	case rt.Scope == "" && len(sec) != 0:
		fail("public route has security %v, want []", sec)
	case rt.Scope != "":
		var schemes []string
		for _, req := range sec {
			rm, _ := req.(map[string]any)
			for name, roles := range rm {
				schemes = append(schemes, name)
				if !reflect.DeepEqual(roles, []any{rt.Scope}) {
					fail("security %s lists %v, want [%q]", name, roles, rt.Scope)
				}
			}
		}
		sort.Strings(schemes)
		want := []string{"bearerAuth"}
		if rt.OAuth {
			want = []string{"basicAuth", "bearerAuth"}
		}
		if !slices.Equal(schemes, want) {
			fail("security schemes %v, want %v", schemes, want)
		}
	}

	responses, _ := op["responses"].(map[string]any)
	// Any handler may fail in a way nobody foresaw: recoverPanics and
	// writeError answer 500 then, on every route.
	if _, has := responses["500"]; !has {
		fail("no response 500, which every route may answer")
	}
	for _, code := range []string{"401", "403"} {
		if _, has := responses[code]; has != (rt.Scope != "") {
			fail("response %s documented: %v, route authenticates: %v", code, has, rt.Scope != "")
		}
	}

	var want []string
	for _, m := range pathParam.FindAllStringSubmatch(rt.Path, -1) {
		want = append(want, m[1])
	}
	sort.Strings(want)
	if got := pathParams(doc, rt.Path, op); !slices.Equal(got, want) {
		fail("required path parameters %v, want %v", got, want)
	}
	return errs
}

// operationsWithoutRoute returns the document's operations, as
// "METHOD path", that are not routes. A HEAD is the route of its GET.
func operationsWithoutRoute(doc map[string]any, routes []route) []string {
	var extra []string
	for _, o := range docOperations(doc) {
		if !slices.ContainsFunc(served(routes), func(rt route) bool { return rt.Method+" "+rt.Path == o }) {
			extra = append(extra, o)
		}
	}
	return extra
}

// served returns the routes with, for each GET, its HEAD: http.ServeMux
// answers HEAD wherever GET is, through the GET's handler (net/http drops
// the body), so a client may send it and the document gives it.
func served(routes []route) []route {
	var out []route
	for _, rt := range routes {
		out = append(out, rt)
		if rt.Method == http.MethodGet {
			head := rt
			head.Method = http.MethodHead
			out = append(out, head)
		}
	}
	return out
}

// headDrift returns every way in which the HEAD operation of path departs
// from its GET: the same statuses, each with the same headers, and no
// body.
func headDrift(doc map[string]any, path string) []string {
	get, head := docOperation(doc, "GET", path), docOperation(doc, "HEAD", path)
	if get == nil || head == nil {
		return []string{fmt.Sprintf("%s: GET %v, HEAD %v", path, get != nil, head != nil)}
	}
	resolve := func(v any) map[string]any {
		m, _ := v.(map[string]any)
		if ref, ok := m["$ref"].(string); ok {
			r, _ := resolveRef(doc, ref)
			m, _ = r.(map[string]any)
		}
		return m
	}
	var errs []string
	gr, _ := get["responses"].(map[string]any)
	hr, _ := head["responses"].(map[string]any)
	for code := range gr {
		if _, ok := hr[code]; !ok {
			errs = append(errs, fmt.Sprintf("HEAD %s lacks GET's status %s", path, code))
		}
	}
	for code, v := range hr {
		h := resolve(v)
		if _, ok := h["content"]; ok {
			errs = append(errs, fmt.Sprintf("HEAD %s %s documents a body", path, code))
		}
		g, ok := gr[code]
		if !ok {
			errs = append(errs, fmt.Sprintf("HEAD %s gives the status %s, which GET does not", path, code))
			continue
		}
		if gh, hh := resolve(g)["headers"], h["headers"]; !reflect.DeepEqual(gh, hh) {
			errs = append(errs, fmt.Sprintf("HEAD %s %s: headers %v, GET's are %v", path, code, hh, gh))
		}
	}
	for _, k := range []string{"x-required-scope", "security", "parameters"} {
		if !reflect.DeepEqual(get[k], head[k]) {
			errs = append(errs, fmt.Sprintf("HEAD %s: %s %v, GET's is %v", path, k, head[k], get[k]))
		}
	}
	sort.Strings(errs)
	return errs
}

func TestOpenAPIMatchesRoutes(t *testing.T) {
	s := New(Config{})
	routes := served(s.routes())
	doc := parseOpenAPI(t)

	t.Run("document", func(t *testing.T) {
		v, _ := doc["openapi"].(string)
		if !regexp.MustCompile(`^3\.1\.\d+$`).MatchString(v) {
			t.Errorf("openapi = %q, want 3.1.x", v)
		}
		if _, ok := doc["paths"].(map[string]any); !ok {
			t.Fatal("no paths object")
		}
		ids := map[string]string{}
		for _, o := range docOperations(doc) {
			method, path, _ := strings.Cut(o, " ")
			id, _ := docOperation(doc, method, path)["operationId"].(string)
			if prev, dup := ids[id]; dup && id != "" {
				t.Errorf("operationId %q used by %s and %s", id, prev, o)
			}
			ids[id] = o
		}
		schemes, _ := doc["components"].(map[string]any)["securitySchemes"].(map[string]any)
		for _, name := range []string{"bearerAuth", "basicAuth"} {
			if _, ok := schemes[name]; !ok {
				t.Errorf("no security scheme %s", name)
			}
		}
	})

	t.Run("refs", func(t *testing.T) {
		for _, bad := range unresolvedRefs(doc) {
			t.Errorf("$ref does not resolve to a component: %s", bad)
		}
	})

	for _, rt := range routes {
		t.Run("route "+rt.Method+" "+rt.Path, func(t *testing.T) {
			for _, e := range checkRoute(doc, rt) {
				t.Error(e)
			}
		})
	}

	// The mux, not only the list it is built from, serves each
	// operation: a path parameter filled in, the request reaches the
	// operation's own pattern (a HEAD, its GET's).
	t.Run("mux", func(t *testing.T) {
		for _, o := range docOperations(doc) {
			method, path, _ := strings.Cut(o, " ")
			req := httptest.NewRequest(method, pathParam.ReplaceAllString(path, "x"), nil)
			want := o
			if method == http.MethodHead {
				want = "GET " + path
			}
			if _, pattern := s.mux.Handler(req); pattern != want {
				t.Errorf("%s reaches the mux pattern %q, want %q", o, pattern, want)
			}
		}
	})

	t.Run("head", func(t *testing.T) {
		for _, rt := range routes {
			if rt.Method == http.MethodHead {
				for _, e := range headDrift(doc, rt.Path) {
					t.Error(e)
				}
			}
		}
	})

	ops := docOperations(doc)
	if len(ops) != len(routes) {
		t.Errorf("openapi.json has %d operations, routes() has %d routes", len(ops), len(routes))
	}
	extra := operationsWithoutRoute(doc, routes)
	for _, o := range ops {
		t.Run("operation "+o, func(t *testing.T) {
			if slices.Contains(extra, o) {
				t.Errorf("openapi.json documents %s, which is not a route", o)
			}
		})
	}
}

// TestOpenAPICheckDetectsDrift makes sure the checks above fail when the
// document and the routes disagree.
func TestOpenAPICheckDetectsDrift(t *testing.T) {
	routes := New(Config{}).routes()
	scoped, public, oauth := routes[0], route{}, route{}
	for _, rt := range routes {
		if rt.Scope == "" && public.Path == "" {
			public = rt
		}
		if rt.OAuth && oauth.Path == "" {
			oauth = rt
		}
	}
	if scoped.Scope == "" || public.Path == "" || oauth.Path == "" {
		t.Fatalf("routes() lacks a scoped, a public or an OAuth route")
	}
	routes = served(routes)
	for _, rt := range []route{scoped, public, oauth} {
		if errs := checkRoute(parseOpenAPI(t), rt); len(errs) != 0 {
			t.Fatalf("unchanged document fails for %s %s: %v", rt.Method, rt.Path, errs)
		}
	}

	cases := []struct {
		name   string
		rt     route
		mutate func(op map[string]any)
	}{
		{"missing operation", scoped, func(op map[string]any) { clear(op) }},
		{"wrong scope", scoped, func(op map[string]any) { op["x-required-scope"] = "keyward:admin" }},
		{"missing scope", scoped, func(op map[string]any) { delete(op, "x-required-scope") }},
		{"scope on public route", public, func(op map[string]any) { op["x-required-scope"] = scoped.Scope }},
		{"security on public route", public, func(op map[string]any) { op["security"] = []any{map[string]any{"bearerAuth": []any{}}} }},
		{"no basic auth on OAuth route", oauth, func(op map[string]any) { op["security"] = op["security"].([]any)[:1] }},
		{"no operationId", scoped, func(op map[string]any) { delete(op, "operationId") }},
		{"no 401", scoped, func(op map[string]any) { delete(op["responses"].(map[string]any), "401") }},
		{"no 500", public, func(op map[string]any) { delete(op["responses"].(map[string]any), "500") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := parseOpenAPI(t)
			op := docOperation(doc, tc.rt.Method, tc.rt.Path)
			tc.mutate(op)
			if len(op) == 0 {
				delete(doc["paths"].(map[string]any)[tc.rt.Path].(map[string]any), strings.ToLower(tc.rt.Method))
			}
			if errs := checkRoute(doc, tc.rt); len(errs) == 0 {
				t.Errorf("checkRoute found nothing wrong")
			}
		})
	}

	t.Run("operation without route", func(t *testing.T) {
		doc := parseOpenAPI(t)
		if len(operationsWithoutRoute(doc, routes)) != 0 {
			t.Fatal("unchanged document has operations without a route")
		}
		item := doc["paths"].(map[string]any)["/v1/tokens/{id}"].(map[string]any)
		item["delete"] = map[string]any{"operationId": "deleteToken"}
		if got, want := operationsWithoutRoute(doc, routes), []string{"DELETE /v1/tokens/{id}"}; !slices.Equal(got, want) {
			t.Errorf("operationsWithoutRoute = %v, want %v", got, want)
		}
	})

	t.Run("HEAD apart from its GET", func(t *testing.T) {
		if errs := headDrift(parseOpenAPI(t), "/v1/tokens/{id}"); len(errs) != 0 {
			t.Fatalf("unchanged document: %v", errs)
		}
		for name, mutate := range map[string]func(get, head map[string]any){
			"status missing": func(get, head map[string]any) { delete(head["responses"].(map[string]any), "404") },
			"status added":   func(get, head map[string]any) { delete(get["responses"].(map[string]any), "404") },
			"body": func(get, head map[string]any) {
				head["responses"].(map[string]any)["404"] = get["responses"].(map[string]any)["404"]
			},
			"header": func(get, head map[string]any) {
				delete(head["responses"].(map[string]any)["200"].(map[string]any)["headers"].(map[string]any), "Cache-Control")
			},
			"scope": func(get, head map[string]any) { head["x-required-scope"] = "keyward:admin" },
		} {
			doc := parseOpenAPI(t)
			mutate(docOperation(doc, "GET", "/v1/tokens/{id}"), docOperation(doc, "HEAD", "/v1/tokens/{id}"))
			if len(headDrift(doc, "/v1/tokens/{id}")) == 0 {
				t.Errorf("%s: headDrift found nothing wrong", name)
			}
		}
	})

	t.Run("dangling ref", func(t *testing.T) {
		doc := parseOpenAPI(t)
		doc["components"].(map[string]any)["schemas"].(map[string]any)["Dangling"] = map[string]any{"$ref": "#/components/schemas/NoSuchSchema"}
		if bad := unresolvedRefs(doc); len(bad) != 1 {
			t.Errorf("unresolvedRefs = %v, want the one dangling ref", bad)
		}
	})
}

func TestOpenAPIServed(t *testing.T) {
	s := New(Config{})
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/openapi.json", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /openapi.json: status %d, want 200", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	onDisk, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rec.Body.Bytes(), onDisk) {
		t.Errorf("GET /openapi.json answered %d bytes that differ from openapi.json (%d bytes)", rec.Body.Len(), len(onDisk))
	}
}

// outcomeCodes lists every verification outcome code, in the order of
// the checks.
func outcomeCodes() []string {
	var codes []string
	for o := keyward.Outcome(0); o.String() != "UNKNOWN"; o++ {
		codes = append(codes, o.String())
	}
	return codes
}

// TestOpenAPIOutcomes: every place of the document that holds an outcome
// code (a verification's code, a usage event's outcome and its filter)
// lists exactly the codes the server answers and reads, so that a
// generated client's enum takes every one of them.
func TestOpenAPIOutcomes(t *testing.T) {
	doc := parseOpenAPI(t)
	want := outcomeCodes()
	if len(want) < 11 {
		t.Fatalf("outcome codes %v: fewer than the contract's", want)
	}
	// enumOf returns the enum of schema, a $ref followed.
	enumOf := func(schema any) []string {
		m, _ := schema.(map[string]any)
		if ref, isRef := m["$ref"].(string); isRef {
			v, _ := resolveRef(doc, ref)
			m, _ = v.(map[string]any)
		}
		var out []string
		list, _ := m["enum"].([]any)
		for _, e := range list {
			out = append(out, fmt.Sprint(e))
		}
		return out
	}
	schemaAt := func(ref string) any { v, _ := resolveRef(doc, ref); return v }
	var filter any
	params, _ := docOperation(doc, "GET", "/v1/usage/events")["parameters"].([]any)
	for _, p := range params {
		if pm, _ := p.(map[string]any); pm["name"] == "outcome" {
			filter = pm["schema"]
		}
	}
	for _, c := range []struct {
		what   string
		schema any
	}{
		{"POST /v1/verify's code", schemaAt("#/components/schemas/VerifyResponse/properties/code")},
		{"a usage event's outcome", schemaAt("#/components/schemas/UsageEventList/properties/items/items/properties/outcome")},
		{"GET /v1/usage/events?outcome", filter},
	} {
		if got := enumOf(c.schema); !slices.Equal(got, want) {
			t.Errorf("%s: enum %v, want the outcome codes %v", c.what, got, want)
		}
	}
}
