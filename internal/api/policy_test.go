package api_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

// TestTokenPolicy checks that the workspace token policy set in the
// dashboard (maximum lifetime, expiry required) holds for API writes too.
func TestTokenPolicy(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	if err := s.db.PutWorkspaceSettings(context.Background(), &keyward.WorkspaceSettings{
		WorkspaceID: s.ws.ID, MaxTokenLifetime: 30 * 24 * time.Hour, ExpiryRequired: true,
	}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		body    map[string]any
		status  int
		detail  string
		pointer string
	}{
		{"ErrNoExpiry", map[string]any{"name": "x"}, 400, "the workspace policy requires an expiry", "/expires_at"},
		// The field the client gave.
		{"ErrTooLong", map[string]any{"name": "x", "expires_in": "1000h"}, 400, "the workspace policy allows at most 30 days", "/expires_in"},
		{"ErrTooLongAt", map[string]any{"name": "x", "expires_at": "2200-01-01T00:00:00Z"}, 400, "", "/expires_at"},
		{"OKWithin", map[string]any{"name": "x", "expires_in": "720h"}, 201, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.do("POST", "/v1/tokens", s.root, tt.body)
			if tt.status == 201 {
				wantStatus(t, r, http.StatusCreated)
				return
			}
			p := wantProblem(t, r, tt.status, "invalid")
			if got := pointersOf(t, p); !slices.Equal(got, []string{tt.pointer}) {
				t.Errorf("pointers = %v, want [%s]", got, tt.pointer)
			}
			if tt.detail != "" && p["detail"] != tt.detail {
				t.Errorf("detail = %v, want %q", p["detail"], tt.detail)
			}
		})
	}
	t.Run("ErrPatchClearsExpiry", func(t *testing.T) {
		r := s.do("POST", "/v1/tokens", s.root, map[string]any{"name": "y", "expires_in": "24h"})
		wantStatus(t, r, http.StatusCreated)
		id := r.object(t)["id"].(string)
		p := wantProblem(t, s.do("PATCH", "/v1/tokens/"+id, s.root, map[string]any{"expires_at": nil}), 400, "invalid")
		if p["detail"] != "the workspace policy requires an expiry" {
			t.Errorf("detail = %v", p["detail"])
		}
		// A patch that leaves the expiry alone is not the policy's business.
		wantStatus(t, s.do("PATCH", "/v1/tokens/"+id, s.root, map[string]any{"name": "z"}), http.StatusOK)
	})
}

// TestRotatePolicy checks that rotating a token made before the policy
// does not hand out a new secret that lives longer than the policy allows.
func TestRotatePolicy(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	create := func(body map[string]any) string {
		r := s.do("POST", "/v1/tokens", s.root, body)
		wantStatus(t, r, http.StatusCreated)
		return r.object(t)["id"].(string)
	}
	forever := create(map[string]any{"name": "forever"})
	long := create(map[string]any{"name": "long", "expires_in": "2000h"})
	short := create(map[string]any{"name": "short", "expires_in": "24h"})
	if err := s.db.PutWorkspaceSettings(context.Background(), &keyward.WorkspaceSettings{
		WorkspaceID: s.ws.ID, MaxTokenLifetime: 30 * 24 * time.Hour, ExpiryRequired: true,
	}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ id, detail string }{
		{forever, "the workspace policy requires an expiry: give the token an expiry the policy allows (PATCH expires_at) before rotating it"},
		{long, "the workspace policy allows at most 30 days: give the token an expiry the policy allows (PATCH expires_at) before rotating it"},
	} {
		p := wantProblem(t, s.do("POST", "/v1/tokens/"+tt.id+"/rotate", s.root, map[string]any{}), http.StatusConflict, "conflict")
		if p["detail"] != tt.detail {
			t.Errorf("detail = %v, want %q", p["detail"], tt.detail)
		}
	}
	wantStatus(t, s.do("POST", "/v1/tokens/"+short+"/rotate", s.root, map[string]any{}), http.StatusOK)
	// Re-dated within the policy, the token rotates.
	wantStatus(t, s.do("PATCH", "/v1/tokens/"+forever, s.root, map[string]any{"expires_in": "240h"}), http.StatusOK)
	wantStatus(t, s.do("POST", "/v1/tokens/"+forever+"/rotate", s.root, map[string]any{}), http.StatusOK)
}
