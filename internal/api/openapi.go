package api

import (
	_ "embed"
	"net/http"
)

// openAPI is the OpenAPI 3.1 description of the API. TestOpenAPIMatchesRoutes
// keeps it in step with routes().
//
//go:embed openapi.json
var openAPI []byte

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openAPI)
}

// OpenAPI returns the OpenAPI 3.1 document that GET /openapi.json serves.
// The caller must not change it.
func OpenAPI() []byte { return openAPI }
