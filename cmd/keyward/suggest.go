package main

import (
	"strings"
	"unicode/utf8"
)

// suggest returns the one name of names that typed is most likely a typo
// of, or "" when none is close enough to say so: a name that differs from
// typed only in case, that typed is the start of (at least three letters,
// and of no other name), that is within a few edits of it (one for a
// word of up to five letters, two up to eight, three beyond), a swap of
// two neighbours being one edit, or else whose words typed starts with
// (see wordsPrefix). Two names equally close, or two that typed is the
// start of, are no answer: a hint that guesses is worse than none.
func suggest(typed string, names []string) string {
	t := strings.ToLower(typed)
	if t == "" {
		return ""
	}
	letters := utf8.RuneCountInString(t) // not bytes: "é" is one letter
	var prefixed []string
	for _, n := range names {
		if strings.ToLower(n) == t {
			return n
		}
		if letters >= 3 && strings.HasPrefix(strings.ToLower(n), t) {
			prefixed = append(prefixed, n)
		}
	}
	switch {
	case len(prefixed) == 1:
		return prefixed[0]
	case len(prefixed) > 1:
		// Typed is the start of several: any of them may be meant, and
		// a third name a few edits away ("usage" for "usage-e", the
		// start of usage-event-buffer and usage-event-retention) would
		// be a guess.
		return ""
	}
	limit := 1
	switch {
	case letters > 8:
		limit = 3
	case letters > 5:
		limit = 2
	case letters < 3:
		limit = 0 // "x" is one edit from any one-letter name, and "ab" from too much
	}
	best, bestDist, tie := "", limit+1, false
	for _, n := range names {
		d := editDistance(t, strings.ToLower(n))
		switch {
		case d < bestDist:
			best, bestDist, tie = n, d, false
		case d == bestDist:
			tie = true
		}
	}
	switch {
	case best != "" && tie:
		return ""
	case best == "":
		// Names just past the limit may have "tied" there: they are
		// no answer, and no reason to withhold this one.
		best = wordsPrefix(t, names)
	}
	return best
}

// wordsPrefix returns the longest name of names (at least three letters)
// whose words typed starts with, then more words: "grace" for
// "grace-time" or "grace_time", a flag spelled with a word its name
// leaves out. It returns "" when there is none.
func wordsPrefix(typed string, names []string) string {
	best := ""
	for _, n := range names {
		ln := strings.ToLower(n)
		if utf8.RuneCountInString(n) >= 3 && len(n) > len(best) && len(typed) > len(ln) && strings.HasPrefix(typed, ln) &&
			(typed[len(ln)] == '-' || typed[len(ln)] == '_') {
			best = n
		}
	}
	return best
}

// editDistance returns the number of single-letter insertions, deletions,
// substitutions and swaps of adjacent letters that turn a into b (the
// optimal string alignment distance). A letter is a rune, not a byte: an
// "é" typed for an "e" is one edit, not two.
func editDistance(as, bs string) int {
	a, b := []rune(as), []rune(bs)
	// Three rows of the table: the one before the previous is needed for
	// swaps.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
