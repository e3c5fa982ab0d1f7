package main

import (
	"io"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/text/width"
)

// runeWidth returns the columns a terminal gives r: 2 for East Asian Wide
// and Fullwidth characters (CJK, most emoji), 0 for combining marks and
// format characters (zero-width joiners and spaces, variation selectors,
// bidi marks), 1 for the rest.
func runeWidth(r rune) int {
	switch {
	case r < 0x300:
		return 1
	case unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf):
		return 0
	}
	switch width.LookupRune(r).Kind() {
	case width.EastAsianWide, width.EastAsianFullwidth:
		return 2
	}
	return 1
}

// textWidth returns the columns s takes on a terminal (see runeWidth).
func textWidth(s string) int {
	n := 0
	for _, r := range s {
		n += runeWidth(r)
	}
	return n
}

// cut returns s cut to at most n columns (see textWidth), the last of
// them an ellipsis, when it is wider.
func cut(s string, n int) string {
	if textWidth(s) <= n {
		return s
	}
	w := 0
	for i, r := range s {
		if w+runeWidth(r) > n-1 {
			return s[:i] + "…"
		}
		w += runeWidth(r)
	}
	return s
}

// cutList joins items with commas, as fmtList does, in at most n columns:
// when they do not all fit, the first ones that do and then " +K more"
// for the K left out, so that the count stays true (the first item cut
// when not even it fits).
func cutList(items []string, n int) string {
	all := fmtList(items)
	if textWidth(all) <= n {
		return all
	}
	if len(items) == 1 {
		return cut(all, n)
	}
	more := func(k int) string { return " +" + strconv.Itoa(k) + " more" }
	w := 0
	for i, it := range items {
		if i > 0 {
			w++ // the comma
		}
		if w+textWidth(it)+len(more(len(items)-i-1)) > n {
			if i == 0 {
				return cut(it, n-len(more(len(items)-1))) + more(len(items)-1)
			}
			return fmtList(items[:i]) + more(len(items)-i)
		}
		w += textWidth(it)
	}
	return all // not reached: all would have fit
}

// writeTable writes rows as columns two spaces apart, each as wide as
// its widest cell in columns on a terminal (text/tabwriter counts a wide
// character as one, and so misaligns every row after a CJK name or an
// emoji). The last cell of a row is not padded. Cells must hold no
// control characters (see clean).
func writeTable(w io.Writer, rows [][]string) error {
	var widths []int
	for _, row := range rows {
		for i, c := range row[:max(len(row)-1, 0)] {
			if i == len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], textWidth(c))
		}
	}
	var b strings.Builder
	for _, row := range rows {
		for i, c := range row {
			b.WriteString(c)
			if i < len(row)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-textWidth(c)+2))
			}
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}
