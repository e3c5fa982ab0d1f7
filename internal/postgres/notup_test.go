package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestNotUpYet(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", fmt.Errorf("migrate: %w", dial), true},
		{"name not resolved", &net.DNSError{Err: "no such host", Name: "db", IsNotFound: true}, true},
		{"starting up", &pgconn.PgError{Code: "57P03"}, true},
		{"shutting down", &pgconn.PgError{Code: "57P01"}, true},
		{"too many connections", &pgconn.PgError{Code: "53300"}, true},
		{"connection failure", &pgconn.PgError{Code: "08006"}, true},
		{"connect timeout", fmt.Errorf("connect: %w", context.DeadlineExceeded), true},
		{"wrong password", &pgconn.PgError{Code: "28P01"}, false},
		{"no such database", &pgconn.PgError{Code: "3D000"}, false},
		{"no such role", &pgconn.PgError{Code: "28000"}, false},
		{"stopped", context.Canceled, false},
		{"TLS refused", errors.New("server refused TLS connection"), false},
	} {
		if got := NotUpYet(c.err); got != c.want {
			t.Errorf("%s: NotUpYet = %v, want %v", c.name, got, c.want)
		}
	}
}
