package dashboard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"maps"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/secret"
)

// page is what every template gets: the common frame and the page's own
// data in D.
type page struct {
	Title string
	Path  string // the request's, to mark the menu's current page
	CSRF  string
	// SessionCSRF is the token of the header's forms (sign-out, the
	// workspace switch), which act in no workspace.
	SessionCSRF string
	User        *keyward.User
	Member      *keyward.Member
	Admin       bool // owner or admin
	Passkeys    bool // passkeys are on (the public URL has a host name)
	// Workspaces lists the user's workspaces when there are several, to
	// switch between them.
	Workspaces []workspaceChoice
	D          any
}

type workspaceChoice struct {
	ID, Name, Role string
	Current        bool
}

var funcs = template.FuncMap{
	"when": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			if v.IsZero() {
				return "—"
			}
			return v.UTC().Format("2006-01-02 15:04 UTC")
		case *time.Time:
			if v == nil {
				return "never"
			}
			return v.UTC().Format("2006-01-02 15:04 UTC")
		}
		return ""
	},
	"join": strings.Join,
	"list": func(v ...string) []string { return v },
	"has": func(list []string, v string) bool {
		for _, x := range list {
			if x == v {
				return true
			}
		}
		return false
	},
	"dur":     span,
	"json":    jsonText,
	"changes": changeLines,
	// current reports whether the page at path is the menu's item at
	// prefix, or one below it (a token's page under Tokens).
	"current": func(path, prefix string) bool { return path == prefix || strings.HasPrefix(path, prefix+"/") },
}

// changeLines renders an audit event's changes (a JSON object) as lines
// people read: "name: old → new" for a change, "scopes added: orders:read
// (privileged)" for a list, one line per field, in the order of the field
// names. What is not such an object is one line of its JSON.
func changeLines(raw []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if dec.Decode(&m) != nil || m == nil {
		return []string{jsonText(raw)}
	}
	var out []string
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			name := strings.TrimSpace(prefix + " " + k)
			if sub, ok := m[k].(map[string]any); ok {
				if t, ok := transition(sub); ok {
					out = append(out, name+": "+t)
				} else {
					walk(name, sub)
				}
				continue
			}
			out = append(out, name+": "+valueText(m[k], false))
		}
	}
	walk("", m)
	return out
}

// transition is a change's {"from", "to"} as text ("a → b", "was a", or
// "b"), and reports whether m is one: it holds from or to and nothing else.
func transition(m map[string]any) (string, bool) {
	from, hasFrom := m["from"]
	to, hasTo := m["to"]
	n := 0
	for _, has := range []bool{hasFrom, hasTo} {
		if has {
			n++
		}
	}
	switch {
	case n == 0 || len(m) != n:
		return "", false
	case !hasFrom:
		return valueText(to, false), true
	case !hasTo:
		return "was " + valueText(from, false), true
	}
	return valueText(from, false) + " → " + valueText(to, false), true
}

// valueText is one value of an audit event's changes as text: a list's
// items joined, an object as its fields, but an item of a list (a scope
// added) as its name followed by its other fields.
func valueText(v any, item bool) string {
	switch x := v.(type) {
	case nil:
		return "none"
	case string:
		if x == "" {
			return `""`
		}
		return x
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = valueText(e, true)
		}
		if len(parts) == 0 {
			return "none"
		}
		return strings.Join(parts, ", ")
	case map[string]any:
		var head string
		var rest []string
		for _, k := range slices.Sorted(maps.Keys(x)) {
			if k == "name" && item {
				head = valueText(x[k], false)
				continue
			}
			if sub, ok := x[k].(map[string]any); ok {
				if t, ok := transition(sub); ok {
					rest = append(rest, k+" "+t)
					continue
				}
			}
			rest = append(rest, k+" "+valueText(x[k], false))
		}
		if len(rest) == 0 {
			return head
		}
		return strings.TrimSpace(head + " (" + strings.Join(rest, "; ") + ")")
	}
	return fmt.Sprint(v)
}

// span is keyward.FormatLifetime of d, a time.Duration or a
// keyward.Duration (a rate limit's window).
func span(d any) string {
	switch x := d.(type) {
	case time.Duration:
		return keyward.FormatLifetime(x)
	case keyward.Duration:
		return keyward.FormatLifetime(time.Duration(x))
	}
	return fmt.Sprint(d)
}

// htmlEscapes are the escapes Go's JSON encoder writes for <, > and &.
var htmlEscapes = map[string]byte{`\u003c`: '<', `\u003e`: '>', `\u0026`: '&'}

// jsonText is stored JSON as people read it: the escapes of htmlEscapes put
// back (the template escapes for HTML itself), and nothing else changed.
func jsonText(raw []byte) string {
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' || i+1 == len(raw) {
			b.WriteByte(raw[i])
			continue
		}
		if i+6 <= len(raw) {
			if c, ok := htmlEscapes[string(raw[i:i+6])]; ok {
				b.WriteByte(c)
				i += 5
				continue
			}
		}
		// Any other escape, an escaped backslash included, stays whole.
		b.Write(raw[i : i+2])
		i++
	}
	return b.String()
}

// parsePages parses each page template with the layout.
func parsePages() (map[string]*template.Template, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		base := strings.TrimSuffix(path.Base(n), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("dashboard: template %s: %w", n, err)
		}
		pages[base] = t
	}
	return pages, nil
}

// render writes the page with the given status. Every page is private to
// its viewer and may hold a secret, so none is stored by any cache.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name, title string, data any) {
	st := stateOf(r)
	p := page{Title: title, Path: r.URL.Path, CSRF: s.csrfToken(st), SessionCSRF: s.sessionCSRF(st), Passkeys: s.webauthn != nil, D: data}
	if st.session != nil && st.session.Verified {
		p.User, p.Member = st.user, st.member
		p.Admin = st.member.Role == keyward.RoleOwner || st.member.Role == keyward.RoleAdmin
		p.Workspaces = s.workspaceChoices(r)
	}
	var buf bytes.Buffer
	t := s.pages[name]
	if t == nil {
		s.log.Error("dashboard: no template", "name", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if err := t.Execute(&buf, p); err != nil {
		s.log.Error("dashboard: render", "template", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

type errorData struct {
	Status  int
	Message string
}

func (s *Server) renderError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.render(w, r, status, "error", http.StatusText(status), errorData{Status: status, Message: secret.Redact(msg)})
}

// workspaceChoices returns the user's workspaces when there are several.
// A failure only hides the switch; it is logged.
func (s *Server) workspaceChoices(r *http.Request) []workspaceChoice {
	st := stateOf(r)
	ms, err := s.accounts.FindMembers(r.Context(), "", st.user.ID)
	if err != nil || len(ms) < 2 {
		if err != nil {
			s.log.Error("dashboard: list workspaces", "err", err)
		}
		return nil
	}
	var out []workspaceChoice
	for _, m := range ms {
		ws, err := s.store.FindWorkspace(r.Context(), m.WorkspaceID)
		if err != nil {
			s.log.Error("dashboard: list workspaces", "err", err)
			return nil
		}
		out = append(out, workspaceChoice{ID: ws.ID, Name: ws.Name, Role: m.Role, Current: ws.ID == st.member.WorkspaceID})
	}
	return out
}
