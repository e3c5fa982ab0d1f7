package account

import (
	"context"
	"encoding/json"
	"time"

	"github.com/keyward/keyward"
)

// NewUser is what CreateUser needs to create a user.
type NewUser struct {
	Email       string
	Password    string
	WorkspaceID string
	Role        string
}

// CreateUser validates nu, hashes its password with p and stores the user
// with its membership and a user.create event by actor, in one
// transaction. It returns EINVALID naming the field (/email, /password,
// /role) for bad input and ECONFLICT when the email is taken. The password
// appears in no error and no event.
func CreateUser(ctx context.Context, st keyward.AccountStore, nu NewUser, p Params, actor keyward.Actor, now time.Time) (*keyward.User, error) {
	email, err := keyward.NormalizeEmail(nu.Email)
	if err != nil {
		return nil, err
	}
	if !keyward.ValidRole(nu.Role) {
		return nil, keyward.Invalid(keyward.FieldError{Pointer: "/role", Detail: "role must be one of owner, admin, member, viewer"})
	}
	if err := CheckPassword(nu.Password, email); err != nil {
		return nil, err
	}
	hash, err := HashPassword(nu.Password, p)
	if err != nil {
		return nil, err
	}
	now = now.UTC()
	u := &keyward.User{ID: keyward.NewID(keyward.PrefixUser, now), Email: email, PasswordHash: hash, CreatedAt: now, UpdatedAt: now}
	changes, _ := json.Marshal(map[string]any{"email": map[string]any{"to": email}, "role": map[string]any{"to": nu.Role}})
	ev := &keyward.AuditEvent{
		ID: keyward.NewID(keyward.PrefixEvent, now), WorkspaceID: nu.WorkspaceID, Time: now,
		Action: "user.create", Actor: actor, Target: u.ID, Changes: changes,
	}
	m := &keyward.Member{WorkspaceID: nu.WorkspaceID, Role: nu.Role, CreatedAt: now}
	if err := st.CreateUser(ctx, u, []*keyward.Member{m}, ev); err != nil {
		if keyward.ErrorCode(err) == keyward.ECONFLICT {
			return nil, keyward.Invalid(keyward.FieldError{Pointer: "/email", Detail: "a user with this email exists"})
		}
		return nil, err
	}
	return u, nil
}
