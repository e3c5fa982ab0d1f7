package dashboard

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/secret"
)

// Recommendation thresholds.
const (
	unusedFor = 90 * 24 * time.Hour
	oldAfter  = 365 * 24 * time.Hour
)

const day = 24 * time.Hour

// canWrite reports whether the role may create and change tokens.
func canWrite(role string) bool { return role != keyward.RoleViewer }

// seesAll reports whether the role sees every token of the workspace, not
// only those it created.
func seesAll(role string) bool { return role != keyward.RoleMember }

// privileged returns the set of scopes the catalog marks privileged.
func privileged(set *keyward.WorkspaceSettings) map[string]bool {
	m := map[string]bool{}
	for _, sc := range set.Scopes {
		if sc.Privileged {
			m[sc.Name] = true
		}
	}
	return m
}

// isPrivileged reports whether the token scope sc grants a privileged
// scope of the catalog, or falls under one: orders:* grants a privileged
// orders:write, and a privileged billing:* covers billing:read.
func isPrivileged(sc string, priv map[string]bool) bool {
	if priv[sc] || keyward.IsManagementScope(sc) {
		return true
	}
	for p := range priv {
		if keyward.Grants([]string{sc}, p) || keyward.Grants([]string{p}, sc) {
			return true
		}
	}
	return false
}

// recommendations returns advice about an active token.
func recommendations(t *keyward.Token, priv map[string]bool, now time.Time) []string {
	if t.State(now) != keyward.StateActive {
		return nil
	}
	var out []string
	if t.ExpiresAt == nil {
		out = append(out, "It never expires: give it an expiry, or rotate it regularly.")
	}
	if len(t.AllowedCIDRs) == 0 {
		for _, sc := range t.Scopes {
			if isPrivileged(sc, priv) {
				out = append(out, "It holds a privileged scope ("+sc+") but no IP allowlist: limit where it can be used from.")
				break
			}
		}
	}
	if last := t.LastUsedAt; last == nil && now.Sub(t.CreatedAt) > unusedFor || last != nil && now.Sub(*last) > unusedFor {
		out = append(out, "It has not been used for 90 days: revoke it if nobody needs it.")
	}
	born := t.CreatedAt
	if t.RotatedAt != nil {
		born = *t.RotatedAt
	}
	if now.Sub(born) > oldAfter {
		out = append(out, "Its secret is more than 365 days old: rotate it.")
	}
	return out
}

type tokenRow struct {
	T         *keyward.Token
	State     string
	CreatedBy string
	// Maker is the management token that made T, when one did and it is
	// the workspace's: the page names and links it rather than its id.
	Maker *keyward.Token
	Recs  []string
}

type listData struct {
	Rows     []tokenRow
	Q        string
	State    string
	States   []string
	CanWrite bool
	Newer    string // cursor of the page of newer tokens, if any
	Older    string // cursor of the page of older tokens, if any
	First    bool   // offer the first page, with no cursor
	Mine     bool
}

// creators maps the workspace's user ids to their emails, to show who
// created a token.
func (s *Server) creators(r *http.Request) map[string]string {
	out := map[string]string{}
	ms, err := s.accounts.FindMembers(r.Context(), stateOf(r).member.WorkspaceID, "")
	if err != nil {
		return out
	}
	for _, m := range ms {
		out[m.UserID] = m.Email
	}
	return out
}

func creatorName(names map[string]string, id string) string {
	if n, ok := names[id]; ok {
		return n
	}
	return id
}

const pageSize = 50

// handleTokenList lists the workspace's tokens newest first, a page at a
// time: ?before=ID gives the page of older ones after a page that ended at
// ID, ?after=ID the page of newer ones before a page that began at ID.
func (s *Server) handleTokenList(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	q := r.URL.Query()
	f := keyward.TokenFilter{Name: strings.TrimSpace(q.Get("q")), State: q.Get("state"), Limit: pageSize + 1}
	newer := q.Get("after")
	if newer != "" {
		f.After = newer // oldest first from the cursor, turned round below
	} else {
		f.Before, f.Newest = q.Get("before"), true
	}
	states := []string{keyward.StateActive, keyward.StateExpired, keyward.StateSuspended, keyward.StateRevoked}
	if f.State != "" && !has(states, f.State) {
		f.State = ""
	}
	if !seesAll(st.member.Role) {
		f.CreatedBy = st.user.ID
	}
	toks, err := s.svc.Tokens(r.Context(), s.caller(r), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	more := len(toks) > pageSize
	if more {
		toks = toks[:pageSize]
	}
	if newer != "" {
		slices.Reverse(toks)
	}
	now := s.now().UTC()
	names := s.creators(r)
	priv := privileged(st.settings)
	d := listData{Q: f.Name, State: f.State, States: states, CanWrite: canWrite(st.member.Role), Mine: !seesAll(st.member.Role)}
	makers := map[string]*keyward.Token{} // of the page's tokens made through the API; nil: not found
	for _, t := range toks {
		row := tokenRow{T: t, State: t.State(now), CreatedBy: creatorName(names, t.CreatedBy), Recs: recommendations(t, priv, now)}
		if id := t.CreatedBy; strings.HasPrefix(id, keyward.PrefixToken) {
			m, ok := makers[id]
			if !ok {
				// A page names a few makers at most: one read each.
				m, _ = s.store.FindToken(r.Context(), t.WorkspaceID, id)
				makers[id] = m
			}
			row.Maker = m
		}
		d.Rows = append(d.Rows, row)
	}
	// beyond reports whether the filter selects any token past id, older
	// (before) or newer: a link is offered only to a page with some.
	beyond := func(id string, older bool) bool {
		g := f
		g.After, g.Before, g.Limit = "", "", 1
		if older {
			g.Before = id
		} else {
			g.After = id
		}
		more, err := s.svc.Tokens(r.Context(), s.caller(r), g)
		return err == nil && len(more) > 0
	}
	cursor := newer != "" || f.Before != ""
	switch {
	case len(toks) == 0:
		// Past either end (a garbage cursor, or the tokens beyond it
		// went): back to the first page.
		d.First = cursor
	case newer != "":
		if more {
			d.Newer = toks[0].ID
		}
		if beyond(toks[len(toks)-1].ID, true) {
			d.Older = toks[len(toks)-1].ID
		}
	default:
		if more {
			d.Older = toks[len(toks)-1].ID
		}
		if f.Before != "" && beyond(toks[0].ID, false) {
			d.Newer = toks[0].ID
		}
	}
	// From deep in the list, the newest page is one click away.
	d.First = d.First || d.Newer != ""
	s.render(w, r, http.StatusOK, "tokens", "Tokens", d)
}

func has(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// tokenForm is the create form as submitted.
type tokenForm struct {
	Name        string
	Scopes      []string
	Extra       string
	Expiry      string // 7, 30, 90, 365, custom, never
	ExpiresOn   string // YYYY-MM-DD, with custom
	CIDRs       string
	RateLimit   string // N/WINDOW
	QuotaLimit  string
	QuotaPeriod string
}

type newData struct {
	F       tokenForm
	Catalog []keyward.ScopeInfo
	expiryChoices
	Errors map[string]string
}

// expiryChoices are the expiries a form offers under a workspace's
// policy: the create form's, and the token page's.
type expiryChoices struct {
	Presets      []string // expiries in days the policy allows
	MinDate      string   // today (UTC), the earliest date to expire on
	MaxDate      string   // the latest date the policy allows, "" for none
	NeverAllowed bool
	MaxLifetime  time.Duration
}

func choicesOf(set *keyward.WorkspaceSettings, now time.Time) expiryChoices {
	presets, _ := allowedPresets(set.MaxTokenLifetime)
	return expiryChoices{
		Presets: presets, MinDate: now.Format("2006-01-02"), MaxDate: latestDate(set.MaxTokenLifetime, now),
		NeverAllowed: !set.ExpiryRequired && set.MaxTokenLifetime == 0, MaxLifetime: set.MaxTokenLifetime,
	}
}

// expiryPresets are the form's expiries in days, shortest first.
var expiryPresets = []string{"7", "30", "90", "365"}

// allowedPresets returns the presets within the longest lifetime max (0:
// none), and the one the form starts with: 90 days, or the longest
// allowed below it, or a date when none is.
func allowedPresets(max time.Duration) (presets []string, preferred string) {
	preferred = "custom"
	for _, p := range expiryPresets {
		n, _ := strconv.Atoi(p)
		if max > 0 && time.Duration(n)*day > max {
			break
		}
		presets = append(presets, p)
		if n <= 90 {
			preferred = p
		}
	}
	return presets, preferred
}

// latestDate is the last date (UTC) a token made at now may be valid
// through under a longest lifetime max, "" for none: the end of that day
// must be within max of now.
func latestDate(max time.Duration, now time.Time) string {
	if max <= 0 {
		return ""
	}
	last := now.Add(max - day).UTC()
	if last.Format("2006-01-02") < now.UTC().Format("2006-01-02") {
		return "" // not even today's end is within it (a policy under a day)
	}
	return last.Format("2006-01-02")
}

func (s *Server) handleTokenNew(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	if !canWrite(st.member.Role) {
		s.renderError(w, r, http.StatusForbidden, "Viewers cannot create tokens.")
		return
	}
	_, preferred := allowedPresets(st.settings.MaxTokenLifetime)
	s.renderNew(w, r, http.StatusOK, tokenForm{Expiry: preferred, QuotaPeriod: keyward.PeriodMonth}, nil)
}

func (s *Server) renderNew(w http.ResponseWriter, r *http.Request, status int, f tokenForm, errs map[string]string) {
	st := stateOf(r)
	set := st.settings
	catalog := set.Scopes
	if !isAdmin(st.member.Role) {
		// Members cannot grant keyward: scopes: not offered.
		catalog = nil
		for _, sc := range set.Scopes {
			if !strings.HasPrefix(sc.Name, keyward.ManagementPrefix) {
				catalog = append(catalog, sc)
			}
		}
	}
	s.render(w, r, status, "token_new", "New token", newData{
		F: f, Catalog: catalog, Errors: errs, expiryChoices: choicesOf(set, s.now().UTC()),
	})
}

// fieldOf maps a JSON pointer of a validation error to a form field.
func fieldOf(pointer string) string {
	switch {
	case strings.HasPrefix(pointer, "/scopes"):
		return "scopes"
	case pointer == "/expires_at":
		return "expiry"
	case strings.HasPrefix(pointer, "/allowed_cidrs"):
		return "cidrs"
	case strings.HasPrefix(pointer, "/rate_limit"):
		return "rate_limit"
	case strings.HasPrefix(pointer, "/quota"):
		return "quota"
	case pointer == "/reason":
		return "reason"
	case pointer == "/grace_period":
		return "grace"
	}
	return strings.TrimPrefix(pointer, "/")
}

// fieldErrors returns the field messages of an EINVALID error, and
// whether err is one. A secret a message repeats (one typed as a scope) is
// redacted, as the API's errors do: with its prefix, or without it when it
// is one of prefixes' (see secret.RedactAll).
func fieldErrors(err error, prefixes []string) (map[string]string, bool) {
	e, ok := err.(*keyward.Error)
	if !ok || e.Code != keyward.EINVALID {
		return nil, false
	}
	out := map[string]string{}
	for _, f := range e.Fields {
		k := fieldOf(f.Pointer)
		if _, seen := out[k]; !seen {
			out[k] = secret.RedactAll(f.Detail, prefixes...)
		}
	}
	if len(out) == 0 {
		out["form"] = secret.RedactAll(e.Message, prefixes...)
	}
	return out, true
}

// secretPrefixes returns the prefixes whose secrets a form's error must
// not repeat, and a field recorded in the audit log must not hold, even
// without their prefix: the session's workspace's and the default one.
// It looks the workspace up, so forms call it only on an error or for
// such a field; when that fails, the default one is all (and the failure
// is logged): the error is still shown.
func (s *Server) secretPrefixes(r *http.Request) []string {
	m := stateOf(r).member
	if m == nil {
		return secret.Prefixes("")
	}
	ws, err := s.store.FindWorkspace(r.Context(), m.WorkspaceID)
	if err != nil {
		s.log.Error("dashboard: find the workspace's token prefix", "request_id", requestIDOf(r), "err", err)
		return secret.Prefixes("")
	}
	return secret.Prefixes(ws.TokenPrefix)
}

// parseTokenForm builds a token from the form; errs holds what the form
// itself gets wrong (the token's own rules are checked on creation).
func parseTokenForm(f tokenForm, now time.Time) (*keyward.Token, map[string]string) {
	errs := map[string]string{}
	t := &keyward.Token{Name: strings.TrimSpace(f.Name)}
	seen := map[string]bool{}
	for _, sc := range append(append([]string(nil), f.Scopes...), strings.FieldsFunc(f.Extra, splitList)...) {
		if sc = strings.TrimSpace(sc); sc != "" && !seen[sc] {
			seen[sc] = true
			t.Scopes = append(t.Scopes, sc)
		}
	}
	var msg string
	if t.ExpiresAt, msg = parseExpiry(f.Expiry, f.ExpiresOn, now); msg != "" {
		errs["expiry"] = msg
	}
	for _, c := range strings.FieldsFunc(f.CIDRs, splitList) {
		t.AllowedCIDRs = append(t.AllowedCIDRs, c)
	}
	if rl := strings.TrimSpace(f.RateLimit); rl != "" {
		n, win, ok := strings.Cut(rl, "/")
		limit, err1 := strconv.ParseInt(strings.TrimSpace(n), 10, 64)
		window, err2 := time.ParseDuration(strings.TrimSpace(win))
		if !ok || err1 != nil || err2 != nil {
			errs["rate_limit"] = "Write the rate limit as COUNT/WINDOW, such as 100/1m or 5000/1h."
		} else {
			t.RateLimit = &keyward.RateLimit{Limit: limit, Window: keyward.Duration(window)}
		}
	}
	if ql := strings.TrimSpace(f.QuotaLimit); ql != "" {
		limit, err := strconv.ParseInt(ql, 10, 64)
		if err != nil {
			errs["quota"] = "The quota must be a whole number of verifications."
		} else {
			t.Quota = &keyward.Quota{Limit: limit, Period: f.QuotaPeriod}
		}
	}
	return t, errs
}

// parseExpiry returns the expiry that a form's choice (7, 30, 90 or 365
// days, custom with a date, or never) makes at now, nil for never; or,
// when the choice is not one, what is wrong with it.
func parseExpiry(choice, date string, now time.Time) (*time.Time, string) {
	switch choice {
	case "7", "30", "90", "365":
		n, _ := strconv.Atoi(choice)
		// To the microsecond, as the service's clock: its policy check
		// must not find a few ns more than n days.
		at := now.Truncate(time.Microsecond).Add(time.Duration(n) * day)
		return &at, ""
	case "custom":
		// Valid through the date given: until the end of that day, UTC.
		d, err := time.Parse("2006-01-02", strings.TrimSpace(date))
		end := d.Add(day)
		switch {
		case err != nil:
			return nil, "Enter the date as YYYY-MM-DD, such as " + now.Add(30*day).Format("2006-01-02") + "."
		case !end.After(now):
			return nil, "The expiry date must be today or later (UTC)."
		}
		return &end, ""
	case "never":
		return nil, ""
	}
	return nil, "Choose when the token expires."
}

// policyMessage returns what the workspace policy set finds wrong with an
// expiry at (nil: never) chosen as choice at now, or "".
func policyMessage(set *keyward.WorkspaceSettings, choice string, at *time.Time, now time.Time) string {
	err := set.CheckToken(at, now)
	if err == nil {
		return ""
	}
	fe, _ := fieldErrors(err, nil) // the policy quotes nothing typed
	if d := latestDate(set.MaxTokenLifetime, now); choice == "custom" && d != "" {
		// A date is valid through its end: name the last one.
		return capitalize(fe["expiry"]) + ": the latest date it allows is " + d + "."
	}
	return fe["expiry"]
}

func splitList(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' }

type createdData struct {
	T       *keyward.Token
	Secret  string
	Rotated bool
}

func (s *Server) handleTokenCreate(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	if !canWrite(st.member.Role) {
		s.renderError(w, r, http.StatusForbidden, "Viewers cannot create tokens.")
		return
	}
	pf := r.PostForm
	f := tokenForm{
		Name: pf.Get("name"), Scopes: pf["scope"], Extra: pf.Get("extra_scopes"), Expiry: pf.Get("expiry"),
		ExpiresOn: pf.Get("expires_on"), CIDRs: pf.Get("cidrs"), RateLimit: pf.Get("rate_limit"),
		QuotaLimit: pf.Get("quota_limit"), QuotaPeriod: pf.Get("quota_period"),
	}
	now := s.now().UTC()
	t, errs := parseTokenForm(f, now)
	if _, ok := errs["expiry"]; !ok {
		if msg := policyMessage(st.settings, f.Expiry, t.ExpiresAt, now); msg != "" {
			errs["expiry"] = msg
		}
	}
	if err := t.Validate(now); err != nil {
		fe, _ := fieldErrors(err, s.secretPrefixes(r))
		for k, v := range fe {
			if _, ok := errs[k]; !ok {
				errs[k] = v
			}
		}
	}
	if len(errs) > 0 {
		s.renderNew(w, r, http.StatusBadRequest, f, errs)
		return
	}
	tok, text, err := s.svc.CreateToken(r.Context(), s.caller(r), t)
	if err != nil {
		if keyward.ErrorCode(err) == keyward.EFORBIDDEN {
			s.renderNew(w, r, http.StatusForbidden, f, map[string]string{"scopes": keyward.ErrorMessage(err)})
			return
		}
		if fe, ok := fieldErrors(err, s.secretPrefixes(r)); ok {
			s.renderNew(w, r, http.StatusBadRequest, f, fe)
			return
		}
		s.fail(w, r, err)
		return
	}
	s.showOnce(w, r, "/tokens/"+tok.ID+"/created", text)
}

// handleTokenCreated shows the secret of the token the create form just
// made (see showOnce), or, after that once, that it is gone.
func (s *Server) handleTokenCreated(w http.ResponseWriter, r *http.Request) {
	s.tokenSecretPage(w, r, "/created", false)
}

// handleTokenRotated is handleTokenCreated for a rotation.
func (s *Server) handleTokenRotated(w http.ResponseWriter, r *http.Request) {
	s.tokenSecretPage(w, r, "/rotated", true)
}

func (s *Server) tokenSecretPage(w http.ResponseWriter, r *http.Request, suffix string, rotated bool) {
	t, err := s.loadToken(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	title := "Token created"
	if rotated {
		title = "Token rotated"
	}
	secret, ok := s.takeOnce(w, r, "/tokens/"+t.ID+suffix)
	status := http.StatusOK
	if !ok {
		status = http.StatusGone
	}
	s.render(w, r, status, "token_created", title, createdData{T: t, Secret: secret, Rotated: rotated})
}

// loadToken returns the token of the URL when the caller may see it; a
// member gets ENOTFOUND for another member's token, as for a token of
// another workspace.
func (s *Server) loadToken(r *http.Request) (*keyward.Token, error) {
	st := stateOf(r)
	t, err := s.svc.Token(r.Context(), s.caller(r), r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	if !seesAll(st.member.Role) && t.CreatedBy != st.user.ID {
		return nil, keyward.Errorf(keyward.ENOTFOUND, "token not found")
	}
	return t, nil
}

type tokenPageData struct {
	T         *keyward.Token
	State     string
	CreatedBy string
	// Maker is the management token that made T, when one did and it is
	// the workspace's: the page names and links it rather than its id.
	Maker    *keyward.Token
	Recs     []string
	Events   []*keyward.AuditEvent
	CanWrite bool
	In       tokenInput // what the forms were given, shown again with their errors
	Choices  expiryChoices
	Errors   map[string]string
	Names    map[string]string // user ids to emails
	Usage    *usageChart
}

// tokenInput is what the token page's forms were given.
type tokenInput struct {
	Reason    string // of a revocation
	Expiry    string // the expiry form's choice: 7, 30, 90, 365, custom, never
	ExpiresOn string // YYYY-MM-DD, with custom
}

func (s *Server) handleTokenPage(w http.ResponseWriter, r *http.Request) {
	t, err := s.loadToken(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.renderToken(w, r, http.StatusOK, t, tokenInput{}, nil)
}

func (s *Server) renderToken(w http.ResponseWriter, r *http.Request, status int, t *keyward.Token, in tokenInput, errs map[string]string) {
	st := stateOf(r)
	now := s.now().UTC()
	// The expiry form chooses nothing until the user does: a choice made
	// for them (the create form's default) would re-date the token at a
	// careless click, further off or sooner than it is.
	events, err := s.store.FindAuditEvents(r.Context(), keyward.AuditFilter{WorkspaceID: t.WorkspaceID, Target: t.ID, Limit: 20})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	chart, err := s.usageChart(r, t, now)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	names := s.creators(r)
	var maker *keyward.Token
	if strings.HasPrefix(t.CreatedBy, keyward.PrefixToken) {
		// Not found (nor any other failure) leaves the id shown.
		maker, _ = s.store.FindToken(r.Context(), t.WorkspaceID, t.CreatedBy)
	}
	s.render(w, r, status, "token", t.Name, tokenPageData{
		T: t, State: t.State(now), CreatedBy: creatorName(names, t.CreatedBy), Maker: maker, Names: names,
		Recs: recommendations(t, privileged(st.settings), now), Events: events,
		CanWrite: canWrite(st.member.Role), In: in, Choices: choicesOf(st.settings, now), Errors: errs, Usage: chart,
	})
}

// tokenToChange returns the token of the request, for a change that a
// viewer may not make (verb: what it would do to it); nil, with the answer
// written, when the token is not the workspace's (404) or the caller is a
// viewer (403).
func (s *Server) tokenToChange(w http.ResponseWriter, r *http.Request, verb string) *keyward.Token {
	t, err := s.loadToken(r)
	if err != nil {
		s.fail(w, r, err)
		return nil
	}
	if !canWrite(stateOf(r).member.Role) {
		s.renderError(w, r, http.StatusForbidden, "Viewers cannot "+verb+" tokens.")
		return nil
	}
	return t
}

// graces are the grace periods offered on rotation.
var graces = map[string]time.Duration{"0s": 0, "1h": time.Hour, "24h": 24 * time.Hour, "168h": 7 * 24 * time.Hour}

func (s *Server) handleTokenRotate(w http.ResponseWriter, r *http.Request) {
	t := s.tokenToChange(w, r, "rotate")
	if t == nil {
		return
	}
	grace, ok := graces[r.PostForm.Get("grace")]
	if !ok {
		s.renderToken(w, r, http.StatusBadRequest, t, tokenInput{}, map[string]string{"grace": "Choose how long the old secret stays valid."})
		return
	}
	tok, text, err := s.svc.RotateToken(r.Context(), s.caller(r), t.ID, grace)
	if err != nil {
		if c := keyward.ErrorCode(err); c == keyward.ECONFLICT || c == keyward.EFORBIDDEN {
			s.renderToken(w, r, http.StatusConflict, t, tokenInput{}, map[string]string{"grace": keyward.ErrorMessage(err)})
			return
		}
		s.fail(w, r, err)
		return
	}
	s.showOnce(w, r, "/tokens/"+tok.ID+"/rotated", text)
}

func (s *Server) handleTokenRevoke(w http.ResponseWriter, r *http.Request) {
	t := s.tokenToChange(w, r, "revoke")
	if t == nil {
		return
	}
	reason := strings.TrimSpace(r.PostForm.Get("reason"))
	errs := map[string]string{}
	if r.PostForm.Get("confirm") != "yes" {
		errs["confirm"] = "Tick the box to confirm: revocation cannot be undone."
	}
	if err := keyward.ValidateReason(reason); err != nil {
		// The service's own rule, so that the form names what is wrong
		// (length, control characters) instead of failing whole.
		errs["reason"] = capitalize(err.Error()) + "."
	}
	if len(errs) > 0 {
		s.renderToken(w, r, http.StatusBadRequest, t, tokenInput{Reason: reason}, errs)
		return
	}
	if _, err := s.svc.RevokeToken(r.Context(), s.caller(r), t.ID, reason); err != nil {
		if keyward.ErrorCode(err) == keyward.EFORBIDDEN {
			s.renderToken(w, r, http.StatusForbidden, t, tokenInput{Reason: reason}, map[string]string{"reason": keyward.ErrorMessage(err)})
			return
		}
		s.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/tokens/"+t.ID, http.StatusSeeOther)
}

// handleTokenExpiry gives the token a new expiry, or none where the
// workspace policy allows it. It is PATCH /v1/tokens/{id} with only
// expires_at: the service's checks (a time to come, the policy's longest
// lifetime and required expiry, the caller's bounds, no revoked token) and
// its token.update event with the change.
func (s *Server) handleTokenExpiry(w http.ResponseWriter, r *http.Request) {
	st := stateOf(r)
	t := s.tokenToChange(w, r, "change")
	if t == nil {
		return
	}
	in := tokenInput{Expiry: r.PostForm.Get("expiry"), ExpiresOn: r.PostForm.Get("expires_on")}
	now := s.now().UTC()
	at, msg := parseExpiry(in.Expiry, in.ExpiresOn, now)
	if msg == "" {
		msg = policyMessage(st.settings, in.Expiry, at, now)
	}
	if msg != "" {
		s.renderToken(w, r, http.StatusBadRequest, t, in, map[string]string{"expiry": msg})
		return
	}
	_, err := s.svc.UpdateToken(r.Context(), s.caller(r), t.ID, func(t *keyward.Token) { t.ExpiresAt = at })
	if err != nil {
		status := http.StatusBadRequest
		switch keyward.ErrorCode(err) {
		case keyward.ECONFLICT:
			// Revoked meanwhile: the page has no form any more.
			s.renderError(w, r, http.StatusConflict, capitalize(keyward.ErrorMessage(err))+".")
			return
		case keyward.EFORBIDDEN:
			status = http.StatusForbidden
		case keyward.EINVALID:
		default:
			s.fail(w, r, err)
			return
		}
		prefixes := s.secretPrefixes(r)
		fe, ok := fieldErrors(err, prefixes)
		if !ok || fe["expiry"] == "" {
			fe = map[string]string{"expiry": capitalize(secret.RedactAll(keyward.ErrorMessage(err), prefixes...)) + "."}
		}
		s.renderToken(w, r, status, t, in, fe)
		return
	}
	http.Redirect(w, r, "/tokens/"+t.ID, http.StatusSeeOther)
}
