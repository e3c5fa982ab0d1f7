// Command passthru is the floor of a Go proxy's cost in bench/gateway.sh:
// one goroutine per client connection, with its own keep-alive
// connection to the upstream, copying each request's header and body
// there and each response back, with no HTTP parsing beyond finding where
// a message ends (Content-Length only). No routing, no auth, no logs, no
// header rewriting: it is not a proxy anyone should run, only the cost a
// Go proxy with goroutine-per-connection I/O cannot go below on the same
// machine, to read keyward's figures against.
//
// Usage: passthru -addr 127.0.0.1:18084 -upstream 127.0.0.1:18090
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"io"
	"log"
	"net"
	"strconv"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18084", "listen `address`")
	upstream := flag.String("upstream", "127.0.0.1:18090", "upstream `address`")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go serve(c, *upstream)
	}
}

var errChunked = errors.New("passthru: only Content-Length framing")

// message copies one message's header and body from r to w and reports
// whether a whole one was copied.
func message(w *bufio.Writer, r *bufio.Reader) error {
	length := int64(0)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		w.Write(line)
		if len(line) <= 2 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.ParseInt(string(bytes.TrimSpace(value)), 10, 64); err != nil {
				return err
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return errChunked
		}
	}
	if _, err := io.CopyN(w, r, length); err != nil {
		return err
	}
	return w.Flush()
}

func serve(c net.Conn, upstream string) {
	defer c.Close()
	u, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	defer u.Close()
	cr, cw := bufio.NewReader(c), bufio.NewWriter(c)
	ur, uw := bufio.NewReader(u), bufio.NewWriter(u)
	for {
		if message(uw, cr) != nil || message(cw, ur) != nil {
			return
		}
	}
}
