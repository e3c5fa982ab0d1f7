package api

import (
	"encoding/json"
	"testing"
)

func TestIntegral(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"100", 100, true},
		{"100.0", 100, true},
		{"1e2", 100, true},
		{"1E+2", 100, true},
		{"1000e-1", 100, true},
		{"-0.0", 0, true},
		{"0e99999", 0, true},
		{"-0E-99999", 0, true},
		{"9223372036854775807.0", 9223372036854775807, true},
		{"-9223372036854775808e0", -9223372036854775808, true},
		{"9223372036854775808.0", 0, false},
		{"1.5", 0, false},
		{"15e-1", 0, false},
		{"1e30", 0, false},
		{"1e-999999999", 0, false},
		{"1e999999999", 0, false},
	} {
		n, ok := integral(json.Number(tc.in))
		if n != tc.want || ok != tc.ok {
			t.Errorf("integral(%s) = %d, %v; want %d, %v", tc.in, n, ok, tc.want, tc.ok)
		}
	}
}
