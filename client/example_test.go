package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/keyward/keyward/client"
)

func ExampleNew() {
	ctx := context.Background()
	c, err := client.New("http://127.0.0.1:8080", os.Getenv("KEYWARD_TOKEN"))
	if err != nil {
		log.Fatal(err)
	}
	tok, err := c.CreateToken(ctx, client.CreateTokenRequest{
		Name:      "orders sync",
		Scopes:    []string{"orders:read"},
		ExpiresIn: client.Duration(30 * 24 * time.Hour),
		RateLimit: &client.RateLimit{Limit: 100, Window: client.Duration(time.Minute)},
	})
	if err != nil {
		log.Fatal(err)
	}
	// The secret is shown this once: hand it to its user, never log it.
	fmt.Println(tok.ID, tok.Hint)
}

func ExampleNewFromEnv() {
	// KEYWARD_SERVER=https://keyward.example.com KEYWARD_TOKEN_FILE=/run/secrets/keyward
	c, err := client.NewFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Ready(context.Background()); err != nil {
		log.Fatal(err)
	}
}

func ExampleClient_Verify() {
	c, err := client.NewFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	res, err := c.Verify(context.Background(), client.VerifyRequest{
		Token:  "kw_...", // the credential a caller of your API presented
		Scopes: []string{"orders:read"},
		IP:     "203.0.113.7",
	})
	if err != nil {
		log.Fatal(err) // keyward did not answer: fail closed
	}
	if !res.Valid {
		fmt.Println("refused:", res.Code) // such as EXPIRED or INSUFFICIENT_SCOPE
		return
	}
	fmt.Println("token", res.TokenID, "of", res.Subject)
}

func ExampleClient_Tokens() {
	c, err := client.NewFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	for tok, err := range c.Tokens(context.Background(), client.TokenFilter{State: client.StateActive, Subject: "customer-42"}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(tok.ID, tok.Name, tok.LastUsedAt)
	}
}

func ExampleClient_AuditEvents() {
	c, err := client.NewFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	f := client.AuditFilter{Action: "token.revoke", From: time.Now().Add(-7 * 24 * time.Hour)}
	for ev, err := range c.AuditEvents(context.Background(), f) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ev.Time, ev.Actor.ID, ev.Target)
	}
}

func ExampleClient_UpdateToken() {
	c, err := client.NewFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	// A merge patch: the fields set change, null clears, the rest stays.
	p := new(client.TokenPatch).
		SetScopes([]string{"orders:read", "orders:write"}).
		SetMetadata(map[string]any{"plan": "pro", "trial": nil}).
		ClearExpiresAt()
	if _, err := c.UpdateToken(context.Background(), "tok_01jd8...", p); err != nil {
		log.Fatal(err)
	}
}

func ExampleError() {
	c, err := client.NewFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.RotateToken(context.Background(), "tok_01jd8...", &client.RotateRequest{GracePeriod: client.Duration(24 * time.Hour)})
	var e *client.Error
	switch {
	case err == nil:
	case client.IsNotFound(err):
		fmt.Println("no such token in this workspace")
	case client.IsConflict(err):
		fmt.Println("revoked or expired: it cannot be rotated")
	case client.IsRateLimited(err), client.IsUnavailable(err):
		fmt.Println("try again in", client.RetryAfter(err))
	case errors.As(err, &e) && e.Code == client.CodeInvalid:
		for _, f := range e.Errors {
			fmt.Println(f.Pointer, f.Detail) // such as /grace_period
		}
	default:
		log.Fatal(err)
	}
}
