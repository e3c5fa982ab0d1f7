// Package gateway is the enforcing reverse proxy of PRODUCT §5: it routes
// each request by host, path prefix and method, verifies the presented token
// with the route's scopes, and proxies to the route's upstreams with the
// token's identity in X-Keyward-* headers.
package gateway

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/realip"
)

// Auth modes of Route.Auth.
const (
	AuthRequired = "required" // a valid token is needed
	AuthOptional = "optional" // no credential passes without identity; a bad one is refused
	AuthNone     = "none"     // no verification; Authorization passes through
)

// DefaultTimeout is the route timeout when none is given.
const DefaultTimeout = 30 * time.Second

// DefaultReadTimeout is a route's read_timeout when none is given: long
// enough for streams that are quiet for minutes between events, short
// enough that an upstream stuck in a body does not hold its client and
// connection for good.
const DefaultReadTimeout = 5 * time.Minute

// Config is a gateway configuration file.
type Config struct {
	Listen         string
	Workspace      string // name of the workspace whose tokens are accepted
	TrustedProxies []netip.Prefix
	// CaseInsensitivePaths matches path prefixes without regard to ASCII
	// case, for upstreams that route so (Express by default, IIS): else
	// /ADMIN would take a catch-all route to the upstream's /admin.
	CaseInsensitivePaths bool
	TLS                  *TLS // nil: plain HTTP
	Server               ServerSettings
	Routes               []Route
	// WorkspaceLine is the line of workspace in the file, for a problem
	// only the store shows (no workspace of that name).
	WorkspaceLine int
}

// ServerSettings are the limits of the gateway's listener towards clients
// (the server: block). They change only on a restart.
type ServerSettings struct {
	// HeaderTimeout bounds the arrival of a request's line and header.
	HeaderTimeout time.Duration
	// IdleTimeout is how long a kept-alive connection waits for its next
	// request.
	IdleTimeout time.Duration
	// SendTimeout drops a client that takes nothing of a response for
	// this long; BodyTimeout one that sends nothing of a request body for
	// this long. Neither applies with TLS, whose server (net/http's) has
	// no such per-write bounds.
	SendTimeout time.Duration
	BodyTimeout time.Duration
	// MaxHeaderBytes bounds a request's line and header.
	MaxHeaderBytes int
}

// Defaults of ServerSettings.
const (
	DefaultHeaderTimeout  = 10 * time.Second
	DefaultIdleTimeout    = 2 * time.Minute
	DefaultSendTimeout    = time.Minute
	DefaultBodyTimeout    = time.Minute
	DefaultMaxHeaderBytes = 64 << 10
)

// defaultServerSettings are the settings without a server: block.
func defaultServerSettings() ServerSettings {
	return ServerSettings{
		HeaderTimeout: DefaultHeaderTimeout, IdleTimeout: DefaultIdleTimeout,
		SendTimeout: DefaultSendTimeout, BodyTimeout: DefaultBodyTimeout,
		MaxHeaderBytes: DefaultMaxHeaderBytes,
	}
}

// TLS names the certificate and key, PEM files, that the gateway listener
// serves with.
type TLS struct {
	CertFile string
	KeyFile  string
}

// HealthCheck is a route's active health check: every Interval, a GET of
// Path on each upstream, which is healthy when it answers 2xx or 3xx within
// Timeout.
type HealthCheck struct {
	Path     string
	Interval time.Duration
	Timeout  time.Duration
}

// Defaults of HealthCheck.
const (
	DefaultHealthInterval = 5 * time.Second
	DefaultHealthTimeout  = time.Second
)

// Route is one entry of Config.Routes.
type Route struct {
	Name        string
	Host        string // lower case, without port; "" matches any host
	PathPrefix  string // starts with "/", no trailing "/" unless it is "/"
	Methods     []string
	Upstreams   []*url.URL
	StripPrefix bool
	Scopes      []string
	Auth        string
	TokenHeader string // canonical header name, or ""
	Timeout     time.Duration
	// ReadTimeout bounds the wait for each next bytes of the upstream's
	// response body, once its header came (0: no bound); not the
	// length of a stream.
	ReadTimeout time.Duration
	HealthCheck *HealthCheck // nil: no active checks
	// EjectAfter is the number of consecutive failed exchanges (the
	// upstream could not be reached or did not answer; a 5xx answer is not
	// a failure) after which an upstream is skipped until a health check
	// passes or a cool-down ends. 0 turns passive ejection off.
	EjectAfter int
}

// allows reports whether the route takes the method.
func (rt *Route) allows(method string) bool {
	if len(rt.Methods) == 0 {
		return true
	}
	for _, m := range rt.Methods {
		if m == method {
			return true
		}
	}
	return false
}

// ConfigError is one problem of a configuration, at a line of its file.
type ConfigError struct {
	Line  int    // 1-based; 0 when unknown
	Field string // such as "routes[0].upstreams"
	Msg   string
}

// ConfigErrors lists every problem of a configuration. Its Error method
// writes one line per problem, as "file:line: field: message".
type ConfigErrors struct {
	File string // "" when parsed from bytes
	Errs []ConfigError
}

func (e *ConfigErrors) Error() string {
	var b strings.Builder
	for i, ce := range e.Errs {
		if i > 0 {
			b.WriteByte('\n')
		}
		switch {
		case e.File != "" && ce.Line > 0:
			fmt.Fprintf(&b, "%s:%d: ", e.File, ce.Line)
		case e.File != "":
			fmt.Fprintf(&b, "%s: ", e.File) // yaml.v3 gives some errors no line
		case ce.Line <= 0:
		default:
			fmt.Fprintf(&b, "line %d: ", ce.Line)
		}
		if ce.Field != "" {
			b.WriteString(ce.Field)
			b.WriteString(": ")
		}
		b.WriteString(ce.Msg)
	}
	return b.String()
}

// Load reads and parses the configuration file at path. Its errors are a
// *ConfigErrors naming the file, each with its line. It does not look at
// the TLS files, which only a start loads (a reload keeps the listener's):
// see Check.
func Load(path string) (*Config, error) {
	return load(path, false)
}

// Check is Load that also loads the TLS certificate and key the file
// names, as a start does, listing their failure with its line among the
// file's other problems: a file that passes starts the gateway.
func Check(path string) (*Config, error) {
	return load(path, true)
}

func load(path string, files bool) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg, p := parse(data)
	if files && cfg != nil && cfg.TLS != nil && cfg.TLS.CertFile != "" && cfg.TLS.KeyFile != "" {
		if _, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile); err != nil {
			p.errf(p.tlsLine, "tls", "%v", err)
		}
	}
	if err := p.result(); err != nil {
		err.(*ConfigErrors).File = path
		return nil, err
	}
	return cfg, nil
}

// Parse parses and validates a YAML configuration. Unknown keys are errors.
// When the configuration is invalid the error is a *ConfigErrors listing
// every problem found, each with its line.
func Parse(data []byte) (*Config, error) {
	cfg, p := parse(data)
	if err := p.result(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// parse parses data into a configuration, which is nil or partly filled
// in when the parser holds errors.
func parse(data []byte) (*Config, *parser) {
	p := &parser{}
	// One decoder for the configuration and for a second document (after
	// ---), which would be left unread unseen. An empty one (a file that
	// ends with ---, as generated YAML may) is nothing.
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc, second yaml.Node
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		p.errs = append(p.errs, ConfigError{Line: syntaxErrLine(data, err), Msg: syntaxErrMsg(err)})
		return nil, p
	}
	switch err := dec.Decode(&second); {
	case err == nil && len(second.Content) > 0 && second.Content[0].ShortTag() != "!!null":
		p.errf(second.Line, "", "the file holds more than one YAML document (---): give the configuration as one")
	case err != nil && !errors.Is(err, io.EOF):
		p.errs = append(p.errs, ConfigError{Line: syntaxErrLine(data, err), Msg: "after the configuration, a second YAML document (---) that does not parse: " + syntaxErrMsg(err)})
	}
	cfg := &Config{Server: defaultServerSettings()}
	if len(doc.Content) == 0 {
		p.errf(1, "", "the configuration is empty")
		return nil, p
	}
	root, err := resolveAliases(doc.Content[0])
	if err != nil {
		p.errs = append(p.errs, *err)
		return nil, p
	}
	p.config(root, cfg)
	return cfg, p
}

// resolveAliases returns n with its YAML aliases (*name) replaced by the
// values they name (&name) and its merge keys (<<: *name, or a list of
// them) merged into their mappings, as a YAML loader does, so that a file
// may name a value once and use it in several routes. A merged mapping's
// key does not replace one the mapping sets itself; of several merged
// ones, the first listed wins. An alias's value takes the alias's line
// for its errors; the fields within a mapping it names keep their own.
// Each list and mapping of the file is resolved once and shared by the
// aliases that name it or a value around it, so that aliases that name
// each other (the "billion laughs"), or values named within named values,
// cost no more than the file's length.
//
// The configuration read is the resolved one, each alias's value read at
// each use: a file whose aliases make it more than maxExpansion values,
// and more than ten times its own, is refused, so that reading it (and
// listing its errors) costs no more than a file of that size would.
func resolveAliases(n *yaml.Node) (*yaml.Node, *ConfigError) {
	r := resolver{open: map[*yaml.Node]bool{}, done: map[*yaml.Node]*yaml.Node{}}
	out := r.node(n)
	if r.err == nil {
		limit := max(maxExpansion, 10*fileValues(n))
		if expansion(out, limit, map[*yaml.Node]int{}) > limit {
			r.fail(n.Line, "the aliases (*name) make the configuration more than %d values: use fewer, or name smaller values", limit)
		}
	}
	return out, r.err
}

// maxExpansion is the number of values (keys, scalars, lists and
// mappings) that aliases may always make a configuration: many times
// that of the largest gateway configured.
const maxExpansion = 100_000

// fileValues returns the number of values of n as written, an alias one.
func fileValues(n *yaml.Node) int {
	count := 1
	if n.Kind != yaml.AliasNode {
		for _, c := range n.Content {
			count += fileValues(c)
		}
	}
	return count
}

// expansion returns the number of values of n, resolved, with a value
// that several aliases share counted at each use, or limit+1 when that is
// more than limit. memo holds the counts of the values shared.
func expansion(n *yaml.Node, limit int, memo map[*yaml.Node]int) int {
	if count, ok := memo[n]; ok {
		return count
	}
	count := 1
	for _, c := range n.Content {
		if count += expansion(c, limit, memo); count > limit {
			count = limit + 1
			break
		}
	}
	memo[n] = count
	return count
}

type resolver struct {
	open map[*yaml.Node]bool       // lists and mappings being resolved: an alias to one is a cycle
	done map[*yaml.Node]*yaml.Node // lists and mappings resolved
	err  *ConfigError
}

func (r *resolver) fail(line int, format string, args ...any) *yaml.Node {
	if r.err == nil {
		r.err = &ConfigError{Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: line}
}

func (r *resolver) node(n *yaml.Node) *yaml.Node {
	if r.err != nil {
		return n
	}
	switch n.Kind {
	case yaml.AliasNode:
		// The value at the alias's line; the fields and items within
		// it (shared by every alias to it) keep their own.
		c := *r.target(n)
		c.Line, c.Column = n.Line, n.Column
		return &c
	case yaml.SequenceNode, yaml.MappingNode:
		if v, ok := r.done[n]; ok {
			return v
		}
		r.open[n] = true
		var v *yaml.Node
		if n.Kind == yaml.SequenceNode {
			c := *n
			c.Content = make([]*yaml.Node, len(n.Content))
			for i, e := range n.Content {
				c.Content[i] = r.node(e)
			}
			v = &c
		} else {
			v = r.mapping(n)
		}
		delete(r.open, n)
		r.done[n] = v
		return v
	}
	return n
}

// target resolves the value an alias names.
func (r *resolver) target(a *yaml.Node) *yaml.Node {
	t := a.Alias
	if t == nil {
		return r.fail(a.Line, "alias *%s names no value", a.Value)
	}
	if r.open[t] {
		return r.fail(a.Line, "alias *%s is used within the value it names", a.Value)
	}
	return r.node(t)
}

func (r *resolver) mapping(n *yaml.Node) *yaml.Node {
	c := *n
	c.Content = make([]*yaml.Node, 0, len(n.Content))
	var merged [][]*yaml.Node // the pairs of each merged mapping, in order
	var mergeKey *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			if mergeKey != nil {
				// Which would win is no rule a reader knows.
				return r.fail(k.Line, "<<: repeated key: merge several mappings as one list, <<: [*a, *b]")
			}
			mergeKey = k
			merged = append(merged, r.mergeSources(k, v)...)
			continue
		}
		c.Content = append(c.Content, r.node(k), r.node(v))
	}
	if len(merged) == 0 {
		return &c
	}
	// A key set before (by the mapping, or a mapping merged earlier) is
	// not taken; one a merged mapping repeats is, so that the walk reports
	// it as it reports any repeated key (a mapping under an x- key is not
	// read itself).
	set := map[string]bool{}
	for i := 0; i < len(c.Content); i += 2 {
		set[c.Content[i].Value] = true
	}
	for _, pairs := range merged {
		var took []string
		for i := 0; i+1 < len(pairs); i += 2 {
			if k := pairs[i].Value; !set[k] {
				took = append(took, k)
				c.Content = append(c.Content, pairs[i], pairs[i+1])
			}
		}
		for _, k := range took {
			set[k] = true
		}
	}
	return &c
}

// mergeSources resolves the value of a merge key (<<): a mapping, or a
// list of them, each as a list of key and value nodes.
func (r *resolver) mergeSources(k, v *yaml.Node) [][]*yaml.Node {
	rv := r.node(v)
	items := []*yaml.Node{rv}
	if rv.Kind == yaml.SequenceNode {
		items = rv.Content
	}
	var out [][]*yaml.Node
	for _, m := range items {
		if m.Kind != yaml.MappingNode {
			r.fail(k.Line, "<<: must name a mapping (<<: *name) or a list of them")
			return nil
		}
		out = append(out, m.Content)
	}
	return out
}

// yamlErrLine returns the N of a yaml.v3 syntax error, "yaml: line N:
// ...", or 0 when it has none.
func yamlErrLine(err error) int {
	s := err.Error()
	if _, rest, ok := strings.Cut(s, "line "); ok {
		if n, _, ok := strings.Cut(rest, ":"); ok {
			if v, err := strconv.Atoi(n); err == nil {
				return v
			}
		}
	}
	return 0
}

// syntaxErrMsg is a yaml.v3 syntax error without its "line N: ", which
// may be wrong (see syntaxErrLine): the error's line is given apart.
func syntaxErrMsg(err error) string {
	s := err.Error()
	if n := yamlErrLine(err); n > 0 {
		s = strings.Replace(s, "line "+strconv.Itoa(n)+": ", "", 1)
	}
	return s
}

// maxSyntaxScan bounds the prefixes syntaxErrLine decodes: their number,
// and the bytes of all of them together, which would otherwise grow with
// the square of the file's length (a reload of a broken file runs in the
// serving process). yaml.v3 decodes about 17 MB a second here.
const (
	maxSyntaxScan      = 2000
	maxSyntaxScanBytes = 4 << 20
)

// syntaxErrLine returns the line of data at which err, the syntax error of
// decoding data, lies. yaml.v3's own "line N" is not always it: for an
// error its parser (not its scanner) finds, N is the 0-based line on which
// the mapping, list or flow value around the problem begins (an unclosed
// "[" on line 6 is said to be on line 5; a key indented wrong on line 6
// of a route that begins on line 4, on line 3), and an unknown alias gets
// no line. The error lies at or after that line: the first prefix of
// data, from there on, that ends on a whole line and fails with the same
// message ends on the error's line. When no prefix does within
// maxSyntaxScan lines and maxSyntaxScanBytes, yaml.v3's line is kept.
func syntaxErrLine(data []byte, err error) int {
	reported := yamlErrLine(err)
	msg := syntaxErrMsg(err)
	end := 0 // of the prefix, which ends after line k
	for k := 1; k < reported && end < len(data); k++ {
		end += lineLen(data[end:])
	}
	budget := maxSyntaxScanBytes
	for k := max(reported, 1); k < max(reported, 1)+maxSyntaxScan && end < len(data); k++ {
		end += lineLen(data[end:])
		if budget -= end; budget < 0 {
			break
		}
		if perr := decodeAll(data[:end]); perr != nil && syntaxErrMsg(perr) == msg {
			return k
		}
	}
	return reported
}

// lineLen is the length of b's first line, with its line feed.
func lineLen(b []byte) int {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return i + 1
	}
	return len(b)
}

// decodeAll decodes every YAML document of data, returning the first
// error but io.EOF.
func decodeAll(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

type parser struct {
	errs    []ConfigError
	tlsLine int // of tls.cert_file, for Load's check of the files
}

func (p *parser) errf(line int, field, format string, args ...any) {
	p.errs = append(p.errs, ConfigError{Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) result() error {
	if len(p.errs) == 0 {
		return nil
	}
	// In the file's order: the walk reports some checks after others.
	slices.SortStableFunc(p.errs, func(a, b ConfigError) int { return a.Line - b.Line })
	return &ConfigErrors{Errs: p.errs}
}

// fields walks a mapping node, calling fn for each known key and reporting
// unknown and repeated keys.
func (p *parser) fields(n *yaml.Node, field string, known map[string]func(key, val *yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		p.errf(n.Line, field, "must be a mapping")
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		fn, ok := known[k.Value]
		switch {
		case !ok && field == "" && strings.HasPrefix(k.Value, "x-"):
			// An extension key at the top: a place to define values
			// (&name) that routes use (*name), as Compose files do.
		case !ok:
			p.errf(k.Line, join(field, k.Value), "unknown key")
		case seen[k.Value]:
			p.errf(k.Line, join(field, k.Value), "repeated key")
		default:
			seen[k.Value] = true
			fn(k, v)
		}
	}
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

func (p *parser) str(n *yaml.Node, field string) string {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		if n.Tag == "!!null" {
			return ""
		}
		p.errf(n.Line, field, "must be a string")
		return ""
	}
	return n.Value
}

func (p *parser) boolean(n *yaml.Node, field string) bool {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
		p.errf(n.Line, field, "must be true or false")
	}
	return b
}

// list decodes a sequence of strings; each element is passed with its node.
func (p *parser) list(n *yaml.Node, field string, fn func(i int, s string, n *yaml.Node)) {
	if n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.SequenceNode {
		p.errf(n.Line, field, "must be a list")
		return
	}
	for i, c := range n.Content {
		f := fmt.Sprintf("%s[%d]", field, i)
		if c.Kind != yaml.ScalarNode || c.Tag == "!!null" {
			p.errf(c.Line, f, "must be a string")
			continue
		}
		fn(i, c.Value, c)
	}
}

func (p *parser) config(n *yaml.Node, cfg *Config) {
	var listenLine, wsLine int
	var routesNode *yaml.Node
	haveRoutes := false
	p.fields(n, "", map[string]func(k, v *yaml.Node){
		"listen": func(k, v *yaml.Node) {
			listenLine = v.Line
			cfg.Listen = p.str(v, "listen")
			if cfg.Listen != "" {
				if err := validListen(cfg.Listen); err != nil {
					p.errf(v.Line, "listen", "%v", err)
				}
			}
		},
		"workspace": func(k, v *yaml.Node) {
			wsLine = v.Line
			cfg.Workspace = strings.TrimSpace(p.str(v, "workspace"))
			cfg.WorkspaceLine = v.Line
		},
		"trusted_proxies": func(k, v *yaml.Node) {
			p.list(v, "trusted_proxies", func(i int, s string, c *yaml.Node) {
				pf, err := realip.ParseProxy(s)
				if err != nil {
					p.errf(c.Line, fmt.Sprintf("trusted_proxies[%d]", i), "%q: %v", s, err)
					return
				}
				cfg.TrustedProxies = append(cfg.TrustedProxies, pf)
			})
		},
		"case_insensitive_paths": func(k, v *yaml.Node) {
			cfg.CaseInsensitivePaths = p.boolean(v, "case_insensitive_paths")
		},
		"tls":    func(k, v *yaml.Node) { cfg.TLS = p.tls(v) },
		"server": func(k, v *yaml.Node) { p.server(v, &cfg.Server) },
		"routes": func(k, v *yaml.Node) {
			haveRoutes = true
			if v.Kind != yaml.SequenceNode {
				p.errf(v.Line, "routes", "must be a list")
				return
			}
			for i, c := range v.Content {
				cfg.Routes = append(cfg.Routes, p.route(c, fmt.Sprintf("routes[%d]", i)))
			}
			routesNode = v
		},
	})
	if routesNode != nil {
		// After every field: whether prefixes differ only in case matters.
		p.duplicates(routesNode, cfg.Routes, cfg.CaseInsensitivePaths)
	}
	if n.Kind != yaml.MappingNode {
		return
	}
	if cfg.Listen == "" {
		p.errf(max(listenLine, n.Line), "listen", "required (host:port)")
	}
	if cfg.Workspace == "" {
		p.errf(max(wsLine, n.Line), "workspace", "required (the name of the workspace whose tokens are accepted)")
	}
	if !haveRoutes || len(cfg.Routes) == 0 {
		p.errf(n.Line, "routes", "at least one route")
	}
}

func validListen(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port must be a number from 0 to 65535", s)
	}
	return nil
}

var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true,
	http.MethodConnect: true, http.MethodTrace: true,
}

func (p *parser) route(n *yaml.Node, field string) Route {
	rt := Route{Auth: AuthRequired, Timeout: DefaultTimeout, ReadTimeout: DefaultReadTimeout}
	var prefixSet, upSet bool
	p.fields(n, field, map[string]func(k, v *yaml.Node){
		"name": func(k, v *yaml.Node) {
			rt.Name = p.str(v, field+".name")
			if rt.Name == UnmatchedRoute {
				p.errf(v.Line, field+".name", "%q is reserved: it labels the requests no route matched in /metrics", UnmatchedRoute)
			}
		},
		"host": func(k, v *yaml.Node) {
			raw := strings.TrimSpace(p.str(v, field+".host"))
			// What a request's Host may be (validHost), or a bare IPv6
			// address: anything else, such as "*.example.com" or
			// "https://api.example.com" (read as the host "https"), no
			// request could match, and the route would silently serve none.
			// A zone ("fe80::1%eth0") is no part of a request's Host.
			a, err := netip.ParseAddr(raw)
			if raw != "" && !validHost(raw) && (err != nil || !strings.Contains(raw, ":") || a.Zone() != "") {
				p.errf(v.Line, field+".host", "%q is not a host name or IP address", raw)
				return
			}
			// A port is not matched: the route would take the host's
			// requests on every port, whatever the file seems to say. (A
			// bare IPv6 address's colons are none; a bracketed one's
			// port follows the bracket.)
			port := raw
			if i := strings.LastIndexByte(raw, ']'); i >= 0 {
				port = raw[i+1:]
			} else if err == nil {
				port = ""
			}
			if strings.Contains(port, ":") {
				p.errf(v.Line, field+".host", "%q: the port is not matched (host matches any port); give the host alone", raw)
				return
			}
			rt.Host = normalizeHost(raw)
		},
		"path_prefix": func(k, v *yaml.Node) {
			prefixSet = true
			s := p.str(v, field+".path_prefix")
			if !strings.HasPrefix(s, "/") {
				p.errf(v.Line, field+".path_prefix", "must start with \"/\"")
				return
			}
			if strings.ContainsAny(s, "?#;") || hasDotSegment(s) {
				// ';' too: requests are routed without their ;parameters.
				p.errf(v.Line, field+".path_prefix", "%q is not a clean path", s)
				return
			}
			if len(s) > 1 {
				s = strings.TrimRight(s, "/")
				if s == "" {
					s = "/"
				}
			}
			rt.PathPrefix = s
		},
		"methods": func(k, v *yaml.Node) {
			p.list(v, field+".methods", func(i int, s string, c *yaml.Node) {
				m := strings.ToUpper(strings.TrimSpace(s))
				if !knownMethods[m] {
					p.errf(c.Line, fmt.Sprintf("%s.methods[%d]", field, i), "%q is not an HTTP method", s)
					return
				}
				for _, have := range rt.Methods {
					if have == m {
						return
					}
				}
				rt.Methods = append(rt.Methods, m)
			})
		},
		"upstreams": func(k, v *yaml.Node) {
			upSet = true
			p.list(v, field+".upstreams", func(i int, s string, c *yaml.Node) {
				u, err := url.Parse(strings.TrimSpace(s))
				f := fmt.Sprintf("%s.upstreams[%d]", field, i)
				shown := redactURL(s) // errors end up in logs
				switch {
				case err != nil:
					p.errf(c.Line, f, "%q is not a URL", shown)
				case u.Scheme != "http" && u.Scheme != "https":
					p.errf(c.Line, f, "%q: the scheme must be http or https", shown)
				case u.Host == "":
					p.errf(c.Line, f, "%q has no host", shown)
				case !validPort(u.Port()):
					p.errf(c.Line, f, "%q: the port must be a number from 1 to 65535", shown)
				case u.User != nil:
					p.errf(c.Line, f, "%q: credentials in an upstream URL are not supported (only scheme, host and path are allowed)", shown)
				case u.RawQuery != "" || u.Fragment != "":
					p.errf(c.Line, f, "%q: only scheme, host and path are allowed", shown)
				default:
					rt.Upstreams = append(rt.Upstreams, u)
				}
			})
			if len(v.Content) == 0 {
				p.errf(v.Line, field+".upstreams", "at least one upstream")
			}
		},
		"strip_prefix": func(k, v *yaml.Node) { rt.StripPrefix = p.boolean(v, field+".strip_prefix") },
		"scopes": func(k, v *yaml.Node) {
			p.list(v, field+".scopes", func(i int, s string, c *yaml.Node) {
				if err := keyward.ValidateScope(s); err != nil {
					p.errf(c.Line, fmt.Sprintf("%s.scopes[%d]", field, i), "%v", err)
					return
				}
				rt.Scopes = append(rt.Scopes, s)
			})
		},
		"auth": func(k, v *yaml.Node) {
			rt.Auth = p.str(v, field+".auth")
			switch rt.Auth {
			case AuthRequired, AuthOptional, AuthNone:
			case "":
				rt.Auth = AuthRequired
			default:
				p.errf(v.Line, field+".auth", "%q: must be required, optional or none", rt.Auth)
			}
		},
		"token_header": func(k, v *yaml.Node) {
			h := strings.TrimSpace(p.str(v, field+".token_header"))
			if h == "" {
				return
			}
			if !validHeaderName(h) {
				p.errf(v.Line, field+".token_header", "%q is not a header name", h)
				return
			}
			h = http.CanonicalHeaderKey(h)
			why := tokenHeaderConflict(h)
			if a := underscoreAlias(h); why == "" && a != h {
				if why = tokenHeaderConflict(a); why != "" {
					why = fmt.Sprintf("reads as %q to CGI-style servers (WSGI, Rack, PHP), which %s", a, why)
				}
			}
			if why != "" {
				p.errf(v.Line, field+".token_header", "%q %s: name another field, such as X-API-Key", h, why)
				return
			}
			rt.TokenHeader = h
		},
		"timeout": func(k, v *yaml.Node) {
			s := p.str(v, field+".timeout")
			if s == "" {
				return
			}
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				p.errf(v.Line, field+".timeout", "%q is not a positive duration such as \"30s\"", s)
				return
			}
			rt.Timeout = d
		},
		"read_timeout": func(k, v *yaml.Node) {
			s := p.str(v, field+".read_timeout")
			if s == "" {
				return
			}
			d, err := time.ParseDuration(s)
			if err != nil || d < 0 {
				p.errf(v.Line, field+".read_timeout", "%q is not a duration such as \"5m\" (0 for no bound)", s)
				return
			}
			rt.ReadTimeout = d
		},
		"health_check": func(k, v *yaml.Node) { rt.HealthCheck = p.healthCheck(v, field+".health_check") },
		"eject_after": func(k, v *yaml.Node) {
			var n int
			if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || v.Decode(&n) != nil || n < 0 { // 1.5 would decode as 1
				p.errf(v.Line, field+".eject_after", "must be a whole number of failures, 0 or more")
				return
			}
			rt.EjectAfter = n
		},
	})
	if n.Kind != yaml.MappingNode {
		return rt
	}
	if rt.Name == "" {
		p.errf(n.Line, field+".name", "required")
	}
	if !prefixSet {
		p.errf(n.Line, field+".path_prefix", "required")
	}
	if !upSet {
		p.errf(n.Line, field+".upstreams", "at least one upstream")
	}
	if rt.Auth == AuthNone && len(rt.Scopes) > 0 {
		p.errf(n.Line, field+".scopes", "a route with auth: none cannot require scopes")
	}
	return rt
}

// duration decodes a positive duration such as "5s"; "" gives def.
func (p *parser) duration(n *yaml.Node, field string, def time.Duration) time.Duration {
	s := p.str(n, field)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		p.errf(n.Line, field, "%q is not a positive duration such as \"5s\"", s)
		return def
	}
	return d
}

func (p *parser) healthCheck(n *yaml.Node, field string) *HealthCheck {
	hc := &HealthCheck{Interval: DefaultHealthInterval, Timeout: DefaultHealthTimeout}
	p.fields(n, field, map[string]func(k, v *yaml.Node){
		"path": func(k, v *yaml.Node) {
			hc.Path = p.str(v, field+".path")
			// Both go as written: a path given escaped (/a%2Fb) is
			// asked for so, not escaped again.
			path, q, _ := strings.Cut(hc.Path, "?")
			switch {
			case !strings.HasPrefix(hc.Path, "/") || strings.ContainsAny(hc.Path, "#"):
				p.errf(v.Line, field+".path", "must be a path starting with \"/\"")
			case !originPath(path):
				p.errf(v.Line, field+".path", "%q: the path may hold only the characters of RFC 3986, others written %%XX (a space %%20), as a request line carries it", hc.Path)
			case !lineSafe(q):
				p.errf(v.Line, field+".path", "%q: the query may not hold white space or control characters", hc.Path)
			}
		},
		"interval": func(k, v *yaml.Node) { hc.Interval = p.duration(v, field+".interval", DefaultHealthInterval) },
		"timeout":  func(k, v *yaml.Node) { hc.Timeout = p.duration(v, field+".timeout", DefaultHealthTimeout) },
	})
	if n.Kind != yaml.MappingNode {
		return nil
	}
	if hc.Path == "" {
		p.errf(n.Line, field+".path", "required (such as /healthz)")
	}
	return hc
}

// server parses the server: block into ss, which holds the defaults.
func (p *parser) server(n *yaml.Node, ss *ServerSettings) {
	p.fields(n, "server", map[string]func(k, v *yaml.Node){
		"header_timeout": func(k, v *yaml.Node) {
			ss.HeaderTimeout = p.duration(v, "server.header_timeout", DefaultHeaderTimeout)
		},
		"idle_timeout": func(k, v *yaml.Node) {
			ss.IdleTimeout = p.duration(v, "server.idle_timeout", DefaultIdleTimeout)
		},
		"send_timeout": func(k, v *yaml.Node) {
			ss.SendTimeout = p.duration(v, "server.send_timeout", DefaultSendTimeout)
		},
		"body_timeout": func(k, v *yaml.Node) {
			ss.BodyTimeout = p.duration(v, "server.body_timeout", DefaultBodyTimeout)
		},
		"max_header_bytes": func(k, v *yaml.Node) {
			var n int
			if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || v.Decode(&n) != nil || n < 1<<10 || n > 1<<20 {
				p.errf(v.Line, "server.max_header_bytes", "must be a number of bytes from 1024 to 1048576")
				return
			}
			ss.MaxHeaderBytes = n
		},
	})
}

func (p *parser) tls(n *yaml.Node) *TLS {
	t := &TLS{}
	p.fields(n, "tls", map[string]func(k, v *yaml.Node){
		"cert_file": func(k, v *yaml.Node) {
			t.CertFile = strings.TrimSpace(p.str(v, "tls.cert_file"))
			p.tlsLine = v.Line
		},
		"key_file": func(k, v *yaml.Node) { t.KeyFile = strings.TrimSpace(p.str(v, "tls.key_file")) },
	})
	if n.Kind != yaml.MappingNode {
		return nil
	}
	switch {
	case t.CertFile == "" && t.KeyFile == "":
		return nil
	case t.CertFile == "":
		p.errf(n.Line, "tls.cert_file", "required with tls.key_file")
	case t.KeyFile == "":
		p.errf(n.Line, "tls.key_file", "required with tls.cert_file")
	}
	return t
}

// duplicates reports routes that no request could tell apart: same name,
// or same host and prefix with overlapping methods. Each route is reported
// once for each, with the first route before it that it repeats, so that
// many copies of a route (aliases make them cheap) make one error each,
// not one for each pair, and are found without comparing every pair.
func (p *parser) duplicates(seq *yaml.Node, routes []Route, fold bool) {
	type place struct{ host, prefix string }
	type firsts struct {
		any, all int            // the first route of the place; the first taking every method (-1: none)
		method   map[string]int // the first taking each method
	}
	names := map[string]int{}
	places := map[place]*firsts{}
	for j := range routes {
		b := &routes[j]
		line := seq.Content[j].Line
		if b.Name != "" {
			if i, ok := names[b.Name]; ok {
				p.errf(line, fmt.Sprintf("routes[%d].name", j), "%q is also the name of routes[%d]", b.Name, i)
			} else {
				names[b.Name] = j
			}
		}
		if b.PathPrefix == "" {
			continue
		}
		k := place{b.Host, b.PathPrefix}
		if fold {
			k.prefix = asciiLower(k.prefix)
		}
		f := places[k]
		if f == nil {
			f = &firsts{any: j, all: -1, method: map[string]int{}}
			places[k] = f
		}
		// The first route before j of the place whose methods overlap j's.
		i := -1
		if len(b.Methods) == 0 {
			if f.any < j {
				i = f.any
			}
		} else {
			i = f.all
			for _, m := range b.Methods {
				if first, ok := f.method[m]; ok && (i < 0 || first < i) {
					i = first
				}
			}
		}
		if i >= 0 {
			p.errf(line, fmt.Sprintf("routes[%d]", j), "duplicates routes[%d] (same host, path_prefix and methods)", i)
		}
		if len(b.Methods) == 0 && f.all < 0 {
			f.all = j
		}
		for _, m := range b.Methods {
			if _, ok := f.method[m]; !ok {
				f.method[m] = j
			}
		}
	}
}

func validHeaderName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return s != ""
}

// originPath reports whether p is a path as a request line writes it
// (RFC 9112 §3.2.1, RFC 3986 §3.3): letters, digits, "-._~", the
// sub-delimiters "!$&'()*+,;=", ":", "@", "/" and %XX escapes, nothing
// else.
func originPath(p string) bool {
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			strings.IndexByte("-._~!$&'()*+,;=:@/", c) >= 0:
		case c == '%' && i+2 < len(p) && isHex(p[i+1]) && isHex(p[i+2]):
			i += 2
		default:
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// tokenHeaderConflict returns why the field k (canonical) cannot be a
// route's token_header, or "" when it can. Such a route would never
// authenticate (the server frames, routes or refuses the request by the
// field first: Host, Content-Length, Transfer-Encoding, Expect), or only
// on some hops (hop-by-hop fields, which HTTP/2 forbids and proxies
// consume), or would take a field the gateway or HTTP reads for another
// end as the credential (its own and the forwarding fields, which it sets
// and drops; Cookie, which browsers attach by themselves).
func tokenHeaderConflict(k string) string {
	switch {
	case k == "Authorization":
		return "is read for its Bearer token on every route"
	case isHopHeader(k):
		return "is hop-by-hop (it concerns one connection: proxies do not pass it on, and HTTP/2 forbids most such fields)"
	case k == "Cookie" || k == "Set-Cookie":
		return "carries cookies, name=value pairs that browsers attach by themselves to requests any site's page makes"
	case slices.Contains(badTrailers[:], k):
		// Host, Content-Length, Content-Type, Expect, Range, ...: the
		// fields RFC 9110 §6.5.1 keeps out of trailers.
		return "has a meaning of its own in HTTP (framing, routing, content, caching or authentication)"
	case len(k) >= 10 && strings.EqualFold(k[:10], "X-Keyward-"),
		k == "X-Request-Id", k == "Forwarded", k == "X-Forwarded",
		len(k) > 12 && strings.EqualFold(k[:12], "X-Forwarded-"),
		slices.Contains(clientIPFields[:], k), slices.Contains(forwardingFields[:], k),
		slices.Contains(rewriteFields[:], k):
		return "is one the gateway sets, replaces or drops itself (identity, request id, client address, forwarding)"
	}
	return ""
}

// hasDotSegment reports whether a path has a "." or ".." segment or an
// empty segment inside it, as an upstream may read it: servlet containers
// (Tomcat, Jetty) drop a segment's ;parameters, so that "..;x" is "..",
// and Windows servers take a backslash for a slash (a path with one is
// refused whole: no API needs it).
func hasDotSegment(p string) bool {
	if strings.IndexByte(p, '\\') >= 0 {
		return true
	}
	first := true
	for {
		seg, rest, more := strings.Cut(p, "/")
		if i := strings.IndexByte(seg, ';'); i >= 0 {
			seg = seg[:i]
		}
		switch {
		case seg == "." || seg == "..":
			return true
		case seg == "" && !first && more:
			return true
		}
		if !more {
			return false
		}
		p, first = rest, false
	}
}

// redactURL returns the URL s with its user information, if any, masked
// whole (a token is often given as the user name); where s does not parse
// as a URL, everything between "://" and the last "@" is.
func redactURL(s string) string {
	if u, err := url.Parse(strings.TrimSpace(s)); err == nil {
		if u.User != nil {
			u.User = url.User("xxxxx")
			return u.String()
		}
		return s
	}
	i, j := strings.Index(s, "://"), strings.LastIndex(s, "@")
	if i >= 0 && j > i+3 {
		return s[:i+3] + "xxxxx" + s[j:]
	}
	return s
}

// validPort reports whether port, of an upstream URL, is absent (the
// scheme's) or a number from 1 to 65535.
func validPort(port string) bool {
	if port == "" {
		return true
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535
}
