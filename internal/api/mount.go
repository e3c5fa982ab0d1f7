package api

import "strings"

// Owns reports whether a request path belongs to the API, so that a
// listener shared with the dashboard sends it here: every /v1 and /oauth2
// path, and the operational endpoints. Every other path is the
// dashboard's. The path is taken in its clean form, so that one the API
// refuses as unclean (//v1/..., /x/../v1/...) comes here to be refused,
// rather than to the dashboard's router, which would redirect it.
func (s *Server) Owns(path string) bool {
	path = cleanPath(path)
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
