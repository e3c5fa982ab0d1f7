package keyward

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// DefaultWorkspace is the name of the workspace every store starts with.
const DefaultWorkspace = "default"

// DefaultTokenPrefix is the token prefix of a workspace that sets none.
const DefaultTokenPrefix = "kw"

// Workspace is a tenant: its tokens, audit log and settings are its own.
type Workspace struct {
	ID          string
	Name        string
	TokenPrefix string
	CreatedAt   time.Time
}

// NameKey is the key under which stores keep workspace names unique:
// two names have the same key exactly when strings.EqualFold holds for
// them, so names that differ only in case cannot both exist. Each rune is
// replaced with the least rune of its simple case folding orbit.
func NameKey(name string) string {
	var b strings.Builder
	b.Grow(len(name))
	for _, r := range name { // bytes not UTF-8 read as U+FFFD, as EqualFold reads them
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}

// NameKeys gives each of the workspaces, in the order they were made, the
// key its name is kept unique under, for a store that adds the key to
// workspaces made before it (whose names may already differ only in
// case): the first of such names gets the plain NameKey, each later one
// the key, a line feed and its id, which no name folds to (names hold no
// control characters). Keys in taken (those of workspaces keyed before,
// when a store keys what an earlier release's node made since) count as
// seen. It returns the keys by workspace id.
func NameKeys(ws []Workspace, taken map[string]bool) map[string]string {
	keys := make(map[string]string, len(ws))
	seen := make(map[string]bool, len(ws)+len(taken))
	for k := range taken {
		seen[k] = true
	}
	for _, w := range ws {
		key := NameKey(w.Name)
		if seen[key] {
			key += "\n" + w.ID
		}
		seen[key] = true
		keys[w.ID] = key
	}
	return keys
}

// WorkspaceFilter pages through workspaces ordered by id.
type WorkspaceFilter struct {
	After string
	Limit int
}

// Validate checks the client-settable fields of a workspace.
func (w *Workspace) Validate() error {
	var errs []FieldError
	switch {
	case strings.TrimSpace(w.Name) == "":
		errs = append(errs, FieldError{"/name", "name is required"})
	case utf8.RuneCountInString(w.Name) > MaxNameLen:
		errs = append(errs, FieldError{"/name", fmt.Sprintf("name must be at most %d characters", MaxNameLen)})
	case strings.ContainsFunc(w.Name, isControl):
		errs = append(errs, FieldError{"/name", "name must not contain control characters"})
	case strings.ContainsFunc(w.Name, isHidden):
		errs = append(errs, FieldError{"/name", "name must not contain bidirectional controls or invisible characters"})
	case w.Name != strings.TrimSpace(w.Name):
		errs = append(errs, FieldError{"/name", "name must not start or end with white space"})
	}
	if err := ValidatePrefix(w.TokenPrefix); err != nil {
		errs = append(errs, FieldError{"/token_prefix", err.Error()})
	}
	if len(errs) > 0 {
		return Invalid(errs...)
	}
	return nil
}

// ValidatePrefix checks a token prefix: 2–16 characters of [a-z][a-z0-9_]*.
func ValidatePrefix(p string) error {
	if len(p) < 2 || len(p) > 16 {
		return fmt.Errorf("token prefix must be 2 to 16 characters")
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || i > 0 && (c >= '0' && c <= '9' || c == '_')) {
			return fmt.Errorf("token prefix must match [a-z][a-z0-9_]*")
		}
	}
	return nil
}
