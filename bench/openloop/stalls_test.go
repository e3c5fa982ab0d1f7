package main

import (
	"strings"
	"testing"
	"time"
)

func TestPrintStalls(t *testing.T) {
	start := time.Unix(1000, 0)
	// One request a millisecond.
	at := func(i int) time.Time { return start.Add(time.Duration(i) * time.Millisecond) }
	lat := make([]time.Duration, 1000)
	for i := range lat {
		lat[i] = time.Millisecond
	}
	// A stretch from 100 ms to 180 ms with fast requests between slow
	// ones (one stall), a failure at 500 ms, and one slow request at
	// 700 ms, more than 100 ms after the failure (a stall of its own).
	for _, i := range []int{100, 101, 150, 180} {
		lat[i] = 30 * time.Millisecond
	}
	lat[120] = 45 * time.Millisecond
	lat[500] = -1
	lat[700] = 21 * time.Millisecond
	var out strings.Builder
	printStalls(&out, lat, at, start, 20*time.Millisecond)
	want := "openloop: stall from 0.100s to 0.180s: 5 over 20ms (the worst 45.000ms), 0 failed\n" +
		"openloop: stall from 0.500s to 0.500s: 0 over 20ms (the worst 0.000ms), 1 failed\n" +
		"openloop: stall from 0.700s to 0.700s: 1 over 20ms (the worst 21.000ms), 0 failed\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
}
