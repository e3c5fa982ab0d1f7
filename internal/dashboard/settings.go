package dashboard

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/secret"
)

// isAdmin reports whether the role manages the workspace's settings.
func isAdmin(role string) bool { return role == keyward.RoleOwner || role == keyward.RoleAdmin }

type settingsData struct {
	MFARequired    bool
	ExpiryRequired bool
	MaxDays        string
	Catalog        string
	Saved          bool
	Errors         map[string]string
}

// catalogText writes the scope catalog one scope a line:
// "name | description | privileged".
func catalogText(scopes []keyward.ScopeInfo) string {
	var b strings.Builder
	for _, sc := range scopes {
		b.WriteString(sc.Name)
		if sc.Description != "" || sc.Privileged {
			b.WriteString(" | " + sc.Description)
		}
		if sc.Privileged {
			b.WriteString(" | privileged")
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// parseCatalog reads what catalogText writes. It refuses a description
// that holds a token's secret (one of prefixes' without its prefix, too):
// descriptions are recorded in the audit log, where no secret may be and
// whence none can be removed without breaking the chain.
func parseCatalog(text string, prefixes ...string) ([]keyward.ScopeInfo, string) {
	var out []keyward.ScopeInfo
	seen := map[string]bool{}
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		parts := strings.Split(line, "|")
		sc := keyward.ScopeInfo{Name: strings.TrimSpace(parts[0])}
		if len(parts) > 1 {
			sc.Description = strings.TrimSpace(parts[1])
		}
		if len(parts) > 2 {
			switch strings.ToLower(strings.TrimSpace(parts[2])) {
			case "privileged", "yes":
				sc.Privileged = true
			case "", "no":
			default:
				return nil, fmt.Sprintf("Line %d: the third column is \"privileged\" or empty.", i+1)
			}
		}
		if len(parts) > 3 {
			return nil, fmt.Sprintf("Line %d: write name | description | privileged.", i+1)
		}
		if err := keyward.ValidateScope(sc.Name); err != nil {
			return nil, fmt.Sprintf("Line %d: %v.", i+1, secret.Redact(err.Error()))
		}
		if secret.Holds(sc.Description, prefixes...) {
			return nil, fmt.Sprintf("Line %d: the description holds a token's secret; a secret is never stored in plain text.", i+1)
		}
		if seen[sc.Name] {
			return nil, fmt.Sprintf("Line %d: %s is listed twice.", i+1, sc.Name)
		}
		seen[sc.Name] = true
		out = append(out, sc)
	}
	if len(out) > 500 {
		return nil, "List at most 500 scopes."
	}
	return out, ""
}

// catalogChanges describes what changed from one scope catalog to the next,
// for the audit log: the scopes added (with their flag) and removed, and the
// ones whose description or privileged flag changed, from and to; or that
// the scopes were reordered, when that is all. It returns nil when nothing
// changed.
func catalogChanges(prev, next []keyward.ScopeInfo) map[string]any {
	was := map[string]keyward.ScopeInfo{}
	for _, sc := range prev {
		was[sc.Name] = sc
	}
	var added []keyward.ScopeInfo
	var changed []map[string]any
	for _, sc := range next {
		old, ok := was[sc.Name]
		delete(was, sc.Name)
		switch {
		case !ok:
			added = append(added, sc)
		case old != sc:
			c := map[string]any{"name": sc.Name}
			if old.Description != sc.Description {
				c["description"] = map[string]any{"from": old.Description, "to": sc.Description}
			}
			if old.Privileged != sc.Privileged {
				c["privileged"] = map[string]any{"from": old.Privileged, "to": sc.Privileged}
			}
			changed = append(changed, c)
		}
	}
	removed := slices.Sorted(maps.Keys(was))
	out := map[string]any{}
	if len(added) > 0 {
		out["added"] = added
	}
	if len(removed) > 0 {
		out["removed"] = removed
	}
	if len(changed) > 0 {
		out["changed"] = changed
	}
	if len(out) == 0 && !slices.Equal(prev, next) {
		out["reordered"] = true
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func (s *Server) handleSettings(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	if !isAdmin(st.member.Role) {
		s.renderError(w, r, http.StatusForbidden, "Only owners and admins change workspace settings.")
		return
	}
	set := st.settings
	d := settingsData{MFARequired: set.MFARequired, ExpiryRequired: set.ExpiryRequired, Catalog: catalogText(set.Scopes), Saved: r.URL.Query().Get("saved") == "1"}
	if set.MaxTokenLifetime > 0 {
		d.MaxDays = strconv.Itoa(int(set.MaxTokenLifetime / day))
	}
	s.render(w, r, http.StatusOK, "settings", "Workspace settings", d)
}

func (s *Server) handleSettingsSave(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	if !isAdmin(st.member.Role) {
		s.renderError(w, r, http.StatusForbidden, "Only owners and admins change workspace settings.")
		return
	}
	// A field the form does not hold (a page from before it existed, a
	// script that sets one setting) keeps its setting; one it holds empty
	// clears it. The form marks each checkbox with a hidden "off" before
	// it, since an unticked box sends nothing.
	pf := r.PostForm
	prev := st.settings
	d := settingsData{MFARequired: prev.MFARequired, ExpiryRequired: prev.ExpiryRequired, Catalog: catalogText(prev.Scopes), Errors: map[string]string{}}
	if prev.MaxTokenLifetime > 0 {
		d.MaxDays = strconv.Itoa(int(prev.MaxTokenLifetime / day))
	}
	if v, ok := pf["mfa_required"]; ok {
		d.MFARequired = slices.Contains(v, "on")
	}
	if v, ok := pf["expiry_required"]; ok {
		d.ExpiryRequired = slices.Contains(v, "on")
	}
	if _, ok := pf["max_days"]; ok {
		d.MaxDays = strings.TrimSpace(pf.Get("max_days"))
	}
	_, catalogSent := pf["catalog"]
	if catalogSent {
		d.Catalog = pf.Get("catalog")
	}
	now := s.now().UTC()
	next := &keyward.WorkspaceSettings{WorkspaceID: st.member.WorkspaceID, MFARequired: d.MFARequired, ExpiryRequired: d.ExpiryRequired, UpdatedAt: now}
	if d.MaxDays != "" {
		n, err := strconv.Atoi(d.MaxDays)
		if err != nil || n < 1 || n > 3650 {
			d.Errors["max_days"] = "Enter a number of days between 1 and 3650, or leave it empty for no limit."
		} else {
			next.MaxTokenLifetime = time.Duration(n) * day
		}
	}
	if catalogSent {
		var msg string
		prefixes := s.secretPrefixes(r)
		if next.Scopes, msg = parseCatalog(d.Catalog, prefixes...); msg != "" {
			// A message may quote a line: a secret pasted there, with or
			// without its prefix, is not repeated.
			d.Errors["catalog"] = secret.RedactAll(msg, prefixes...)
		}
	} else {
		// Kept as stored, not through the text: a description with a
		// "|", or a scope that later rules refuse, must not block (or
		// change) a save that does not touch the catalog.
		next.Scopes = slices.Clone(prev.Scopes)
	}
	if d.MFARequired && !st.factor {
		d.Errors["mfa_required"] = "Set up two-step verification for yourself first, so that you are not locked out."
	}
	if len(d.Errors) > 0 {
		s.render(w, r, http.StatusBadRequest, "settings", "Workspace settings", d)
		return
	}
	changes := map[string]any{}
	if prev.MFARequired != next.MFARequired {
		changes["mfa_required"] = map[string]any{"from": prev.MFARequired, "to": next.MFARequired}
	}
	if prev.ExpiryRequired != next.ExpiryRequired {
		changes["expiry_required"] = map[string]any{"from": prev.ExpiryRequired, "to": next.ExpiryRequired}
	}
	if prev.MaxTokenLifetime != next.MaxTokenLifetime {
		changes["max_token_lifetime"] = map[string]any{"from": keyward.Duration(prev.MaxTokenLifetime).String(), "to": keyward.Duration(next.MaxTokenLifetime).String()}
	}
	if c := catalogChanges(prev.Scopes, next.Scopes); c != nil {
		changes["scopes"] = c
	}
	var events []*keyward.AuditEvent
	if len(changes) > 0 {
		ev := s.event(r, next.WorkspaceID, st.user.ID, "workspace.settings_update", next.WorkspaceID, now)
		ev.Changes, _ = json.Marshal(changes)
		events = append(events, ev)
	}
	if err := s.accounts.PutWorkspaceSettings(r.Context(), next, events...); err != nil {
		s.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/settings?saved=1", http.StatusSeeOther)
}

// auditPage is how many events the audit page shows at a time.
const auditPage = 100

type auditData struct {
	Events []*keyward.AuditEvent
	Action string
	Actor  string
	Target string
	From   string // YYYY-MM-DD, inclusive
	To     string // YYYY-MM-DD, inclusive
	Next   string // cursor of the page of older events, if any
	First  bool   // offer the newest events, from a page past them
	Names  map[string]string
	Errors map[string]string
}

func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	if !seesAll(st.member.Role) {
		s.renderError(w, r, http.StatusForbidden, "Members do not see the workspace's audit log.")
		return
	}
	q := r.URL.Query()
	f := keyward.AuditFilter{WorkspaceID: st.member.WorkspaceID, Action: strings.TrimSpace(q.Get("action")), Actor: strings.TrimSpace(q.Get("actor")),
		Target: strings.TrimSpace(q.Get("target")), Before: q.Get("before"), Limit: auditPage + 1}
	d := auditData{Action: f.Action, Actor: f.Actor, Target: f.Target, From: q.Get("from"), To: q.Get("to"), Names: s.creators(r), Errors: map[string]string{}}
	const dateHint = "Enter a date as YYYY-MM-DD."
	if d.From != "" {
		if t, err := time.Parse("2006-01-02", d.From); err != nil {
			d.Errors["from"] = dateHint
		} else {
			f.From = t
		}
	}
	if d.To != "" {
		if t, err := time.Parse("2006-01-02", d.To); err != nil {
			d.Errors["to"] = dateHint
		} else {
			f.To = t.Add(day) // the whole day
		}
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		d.Errors["to"] = "The end date must be on or after the start date."
	}
	if strings.Contains(f.Actor, "@") {
		// People are shown by email: they may be looked for by it.
		if email, err := keyward.NormalizeEmail(f.Actor); err == nil {
			if u, err := s.accounts.FindUserByEmail(r.Context(), email); err == nil {
				f.Actor = u.ID
			} else if keyward.ErrorCode(err) != keyward.ENOTFOUND {
				s.fail(w, r, err)
				return
			}
		}
	}
	if len(d.Errors) > 0 {
		s.render(w, r, http.StatusBadRequest, "audit", "Audit log", d)
		return
	}
	evs, err := s.store.FindAuditEvents(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(evs) > auditPage {
		evs = evs[:auditPage]
		d.Next = evs[len(evs)-1].ID
	}
	d.Events, d.First = evs, f.Before != ""
	s.render(w, r, http.StatusOK, "audit", "Audit log", d)
}
