package api

import "strings"

// Owns reports whether a request path belongs to the API, so that a
// listener shared with the dashboard sends it here: every /v1 and /oauth2
// path, and the operational endpoints. Every other path is the
// dashboard's.
func (s *Server) Owns(path string) bool {
	if path == "/v1" || strings.HasPrefix(path, "/v1/") || strings.HasPrefix(path, "/oauth2/") {
		return true
	}
	for _, rt := range s.routes() {
		if !strings.Contains(rt.Path, "{") && rt.Path == path {
			return true
		}
	}
	return false
}
