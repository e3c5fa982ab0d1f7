// Command gatewayup is the upstream of bench/gateway.sh: a keep-alive
// net/http server that answers every request with a small fixed JSON body.
package main

import (
	"flag"
	"log"
	"net/http"
	"strconv"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18090", "listen `ADDR`")
	flag.Parse()
	body := []byte(`{"id":"ord_1","status":"shipped","total":4200}` + "\n")
	size := strconv.Itoa(len(body))
	srv := &http.Server{
		Addr:              *addr,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h["Content-Type"] = []string{"application/json"}
			h["Content-Length"] = []string{size}
			w.Write(body)
		}),
	}
	log.Fatal(srv.ListenAndServe())
}
