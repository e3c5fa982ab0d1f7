package keyward

import "strings"

// CSVSafe guards a CSV cell against formula injection: a spreadsheet runs
// a cell starting with = + - @ (or a tab or carriage return, which some
// strip first) as a formula, so such a cell gets a leading single quote,
// which spreadsheets show as text (OWASP "CSV Injection"). Every CSV file
// keyward writes passes its cells through it: they hold what clients sent
// (names, user agents, reasons).
func CSVSafe(c string) string {
	if c != "" && strings.ContainsRune("=+-@\t\r", rune(c[0])) {
		return "'" + c
	}
	return c
}
