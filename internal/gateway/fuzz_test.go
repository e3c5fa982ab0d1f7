package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The fast paths of the gateway's HTTP/1.1 handling (parseSimpleRequest
// for client requests, parseSimpleHead for upstream responses) skip
// net/http's readers. These fuzz targets hold them to what the readers do
// on the same bytes: whatever a fast path takes, the slow path must take
// too, read the same way (framing above all: a difference there is a
// request or response smuggled past the gateway). In an ordinary go test
// run only the seeds below run.

// requestSeeds are requests the fast path must read as the slow path
// does, or leave to it. Each is also tried with a second request after it.
var requestSeeds = []string{
	"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com:8080\r\nAuthorization: Bearer t\r\nX-A:\tv\t\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: h\r\ncontent-length:3\r\n\r\nabc",
	// Content-Length, every way but the plain one.
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length:  3\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3 \r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 03\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 000000003\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0000000003\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\ncontent-length: 0\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775808\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0x3\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: -3\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: \u0663\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length : 3\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length\t: 3\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\n Content-Length: 3\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nX: 1\r\n Content-Length: 3\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n 4\r\n\r\nabcd",
	// Transfer-Encoding, alone, in HTTP/1.0, with a length, disguised.
	"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: h\r\ntransfer-encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
	"POST /p HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: h\r\nTransfer_Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
	// Line ends and bytes a line must not hold.
	"GET / HTTP/1.1\nHost: h\n\n",
	"GET / HTTP/1.1\r\nHost: h\nX-A: 1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\rX-B: 2\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x7fb\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n 2\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\n\tX-A: 1\r\n\r\n",
	"GET / HTTP/1.1\r\n Host: h\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\n x\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nBad Name: v\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX-A : v\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX-A\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX-A: \xc3\xa9\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX-\xc3\xa9: v\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX-Odd_Name: v\r\nx-a: 1\r\nX-A: 2\r\nX-Empty:\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + strings.Repeat("a", 5000) + "\r\n\r\n",
	// The request line.
	"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
	"GET /  HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET / http/1.1\r\nHost: h\r\n\r\n",
	"GET / HTTP/1.10\r\nHost: h\r\n\r\n",
	"GET / HTTP/01.1\r\nHost: h\r\n\r\n",
	"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
	"GET / HTTP/0.9\r\nHost: h\r\n\r\n",
	"GET /\r\nHost: h\r\n\r\n",
	"get / HTTP/1.1\r\nHost: h\r\n\r\n",
	"G@T / HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /\x00 HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /a%20b HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /a%2f HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /a? HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /a?b?c HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /a#f HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /a?q=%zz HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET //x/y HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /a/./b/../c HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /$&+,;=:@~_-. HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /a!b(c)'*d HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET http://other/x HTTP/1.1\r\nHost: h\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
	"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
	"CONNECT /x HTTP/1.1\r\nHost: h\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	// Host.
	"GET / HTTP/1.1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost:\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h:80:80\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a,b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: \xc3\xa9\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\n .evil\r\n\r\n",
	"GET / HTTP/1.0\r\n\r\n",
	// Connection, HTTP/1.0 and keep-alive.
	"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
	"GET / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n",
	"GET / HTTP/1.0\r\nHost: h\r\nConnection: Keep-Alive, x\r\n\r\n",
	"GET / HTTP/1.0\r\nHost: h\r\nConnection: \u212aeep-alive\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nConnection: clo\u017fe\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\nConnection: x\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nConnection:\tclose\t\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nConnection: \"close\"\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nConnection: close;q=1\r\n\r\n",
	// Fields the server or ReadRequest treats its own way.
	"POST /p HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: h\r\nExpect: 100-continuo\r\nContent-Length: 3\r\n\r\nabc",
	"GET / HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1; b=2\r\nCookie: c=3\r\n\r\n",
	// Pipelined requests that differ in framing.
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /n HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
}

// nextRequest is what follows a request seed in its second form.
const nextRequest = "GET /next HTTP/1.1\r\nHost: h\r\n\r\n"

// slowRequest reads the request at the start of b as the server's
// ordinary path does: http.ReadRequest, then the refusals readRequest
// and handle add. refused says why the server would refuse it ("" when
// not); n is how many bytes the request, body included, takes.
func slowRequest(b []byte, maxHeader int64) (req *http.Request, body []byte, n int, refused string) {
	src := bytes.NewReader(b)
	br := bufio.NewReaderSize(src, len(b)+16)
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, nil, 0, "ReadRequest: " + err.Error()
	}
	if head := len(b) - src.Len() - br.Buffered(); int64(head-4) > maxHeader {
		return nil, nil, 0, "431: header too large"
	}
	if msg := checkRequest(req); msg != "" {
		return nil, nil, 0, "400: " + msg
	}
	fr := scanFraming(b)
	switch {
	case fr.te && (fr.cl || !req.ProtoAtLeast(1, 1)):
		return nil, nil, 0, "400: ambiguous framing"
	case !fr.complete && (!req.ProtoAtLeast(1, 1) || len(req.TransferEncoding) > 0):
		req.Close = true
	}
	if len(req.Header["Expect"]) > 0 && !headerHasToken(req.Header["Expect"], "100-continue") {
		return nil, nil, 0, "417"
	}
	body, err = io.ReadAll(req.Body)
	if err != nil {
		return nil, nil, 0, "body: " + err.Error()
	}
	return req, body, len(b) - src.Len() - br.Buffered(), ""
}

// sameRequest returns how got differs from want, which the slow path
// read; "" when it does not.
func sameRequest(got *http.Request, gotBody []byte, want *http.Request, wantBody []byte) string {
	var diffs []string
	check := func(what string, g, w any) {
		if !reflect.DeepEqual(g, w) {
			diffs = append(diffs, fmt.Sprintf("%s %#v, slow path %#v", what, g, w))
		}
	}
	check("method", got.Method, want.Method)
	check("URL", *got.URL, *want.URL)
	check("RequestURI", got.RequestURI, want.RequestURI)
	check("proto", [3]any{got.Proto, got.ProtoMajor, got.ProtoMinor}, [3]any{want.Proto, want.ProtoMajor, want.ProtoMinor})
	check("Host", got.Host, want.Host)
	check("header", got.Header, want.Header)
	check("ContentLength", got.ContentLength, want.ContentLength)
	check("TransferEncoding", len(got.TransferEncoding), len(want.TransferEncoding))
	check("Close", got.Close, want.Close)
	check("body", string(gotBody), string(wantBody))
	return strings.Join(diffs, "; ")
}

// FuzzSimpleRequest: a request parseSimpleRequest takes is one the server's
// ordinary path takes too, read the same way, to the same byte.
func FuzzSimpleRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
		f.Add([]byte(s + nextRequest))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, maxHeader := range []int64{1 << 20, 40} {
			got, n, ok := parseSimpleRequest(b, maxHeader)
			if !ok {
				continue
			}
			want, wantBody, wantN, refused := slowRequest(b, maxHeader)
			if refused != "" {
				t.Fatalf("%q (limit %d): the fast path took what the server refuses: %s", b, maxHeader, refused)
			}
			gotBody, err := io.ReadAll(got.Body)
			if err != nil {
				t.Fatalf("%q: reading the fast path's body: %v", b, err)
			}
			if d := sameRequest(got, gotBody, want, wantBody); d != "" {
				t.Fatalf("%q (limit %d): %s", b, maxHeader, d)
			}
			if n != wantN {
				t.Fatalf("%q (limit %d): the fast path took %d bytes, the slow path %d", b, maxHeader, n, wantN)
			}
		}
	})
}

// FuzzScanFraming: the server's look for Transfer-Encoding and
// Content-Length in a raw request header, on which its refusal of
// ambiguous framing rests, sees the fields textproto reads.
func FuzzScanFraming(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(b)))
		if _, err := tp.ReadLine(); err != nil {
			return
		}
		hdr, err := tp.ReadMIMEHeader()
		if err != nil {
			return
		}
		fr := scanFraming(b)
		if !fr.complete {
			t.Fatalf("%q: textproto read a whole header, scanFraming did not find its end", b)
		}
		if te := hdr["Transfer-Encoding"] != nil; fr.te != te {
			t.Fatalf("%q: scanFraming te=%v, textproto %v", b, fr.te, te)
		}
		if cl := hdr["Content-Length"] != nil; fr.cl != cl {
			t.Fatalf("%q: scanFraming cl=%v, textproto %v", b, fr.cl, cl)
		}
	})
}

// responseSeeds are upstream response heads (and bodies) the fast path
// must read as http.ReadResponse does, or leave to it.
var responseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\ncontent-length: 2\r\n\r\nhi",
	"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
	// The status line.
	"HTTP/1.1  200 OK\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 200\tOK\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 +20 OK\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\nhi",
	"http/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\n\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\nConnection: close\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 O\rK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 \xc3\xa9\r\nContent-Length: 0\r\n\r\n",
	// Statuses without a body, and interim ones.
	"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 101 Switching Protocols\r\nContent-Length: 0\r\n\r\n",
	// Content-Length.
	"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length:  2 \t\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 02\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi!",
	"HTTP/1.1 200 OK\r\nContent-Length: 999999999999999999\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 9999999999999999999\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n 3\r\n\r\nhi!",
	"HTTP/1.1 200 OK\r\nX-A: 1\r\n Content-Length: 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\n Content-Length: 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n",
	// Transfer-Encoding and the other fields the slow path drops.
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nProxy-Connection: close\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTrailer: X-T\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nUpgrade: h2c\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Request-Id: up\r\nRateLimit: x\r\nratelimit-policy: y\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nPragma: no-cache\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nPragma: no-cache\r\nCache-Control: max-age=5\r\n\r\nhi",
	// Line ends, bytes and names a field must not hold.
	"HTTP/1.1 200 OK\r\nContent-Length: 2\nX-A: a\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: a\rb\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: a\x00b\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: \xc3\xa9\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-\xc3\xa9: v\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX A: v\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nX-Odd_Name: v\r\nX-Empty:\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Long: " + strings.Repeat("a", 5000) + "\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
}

// FuzzSimpleHead: an upstream response head parseSimpleHead takes is one
// http.ReadResponse reads the same way (status, length, framing, bytes
// taken, fields) and from which the slow path would drop no field.
func FuzzSimpleHead(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(b), len(b)+16)
		br.Peek(len(b))
		sh, n, ok := parseSimpleHead(br, nil)
		if br.Buffered() != len(b) {
			t.Fatalf("%q: parseSimpleHead consumed bytes", b)
		}
		if !ok {
			return
		}
		src := bytes.NewReader(b)
		br = bufio.NewReaderSize(src, len(b)+16)
		res, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Fatalf("%q: the fast path took what ReadResponse refuses: %v", b, err)
		}
		if wantN := len(b) - src.Len() - br.Buffered(); n != wantN {
			t.Fatalf("%q: the fast path took %d bytes, ReadResponse %d", b, n, wantN)
		}
		if sh.status != res.StatusCode || res.ProtoMajor != 1 || res.ProtoMinor != 1 {
			t.Fatalf("%q: status %d, ReadResponse's %d (HTTP/%d.%d)", b, sh.status, res.StatusCode, res.ProtoMajor, res.ProtoMinor)
		}
		if sh.length != res.ContentLength || len(res.TransferEncoding) > 0 || res.Close || len(res.Trailer) > 0 {
			t.Fatalf("%q: length %d, ReadResponse's %d (te %q, close %v, trailer %v)", b, sh.length, res.ContentLength, res.TransferEncoding, res.Close, res.Trailer)
		}
		// What the slow path (exchange) would make of the same head.
		if fr := scanFraming(b); !fr.complete || fr.te || announcesBody(res, fr) {
			t.Fatalf("%q: the slow path would not keep the connection (%+v)", b, fr)
		}
		// The lines passed on as they came are the fields the slow path
		// passes on (copyResponseHeader), no more, no fewer.
		fields, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(append(sh.fields, "\r\n"...)))).ReadMIMEHeader()
		if err != nil {
			t.Fatalf("%q: the fast path's lines %q do not parse: %v", b, sh.fields, err)
		}
		kept := http.Header{}
		copyResponseHeader(kept, res)
		if kept["Content-Type"] == nil {
			delete(kept, "Content-Type") // the slow path's mark: no type came
		}
		if !reflect.DeepEqual(http.Header(fields), kept) {
			t.Fatalf("%q: the fast path passes on %q, the slow path %q", b, fields, kept)
		}
		if hasDate := fields["Date"] != nil; sh.hasDate != hasDate {
			t.Fatalf("%q: hasDate %v with fields %q", b, sh.hasDate, fields)
		}
		body, err := io.ReadAll(res.Body)
		if err == nil && int64(len(body)) != sh.length {
			t.Fatalf("%q: ReadResponse read a %d-byte body, the fast path expects %d", b, len(body), sh.length)
		}
	})
}

// FuzzConnectionValues: the Connection values read from a raw response
// header are the ones textproto reads, and a field that http.ReadResponse
// deleted for saying close is one connectionSaysClose sees.
func FuzzConnectionValues(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add([]byte(s))
	}
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nConnection: close, X-Foo\r\nX-Foo: 1\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: keep-alive,\r\n close\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: X-A\r\n\tclose\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection:\r\n close\r\n X-B\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection:close\r\nconnection: X-C\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nCONNECTION: CLOSE\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: clo\u017fe, X-D\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\nConnection: close\nX-B: 1\n CONNECTION: no\nConnection:  X-C \t\n\tX-D\n\n",
		"HTTP/1.1 200 OK\r\nConnection : close\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: \"close\"\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n\r\nConnection: X-Body\r\n",
		"Connection: close\r\nX-A: 1\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(b)))
		if _, err := tp.ReadLine(); err != nil {
			return
		}
		hdr, err := tp.ReadMIMEHeader()
		if err != nil {
			return
		}
		want := hdr["Connection"]
		if got := connectionValues(b); !slices.Equal(got, want) {
			t.Fatalf("%q: connectionValues %q, textproto %q", b, got, want)
		}
		res, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), &http.Request{Method: http.MethodGet})
		if err != nil || want == nil || res.Header["Connection"] != nil {
			return
		}
		// ReadResponse deleted the field: it said close.
		if got := closedConnectionValues(b); !slices.Equal(got, want) {
			t.Fatalf("%q: closedConnectionValues %q, want %q", b, got, want)
		}
	})
}

// fuzzServer is the gateway's Server on a loopback port, whose handler
// records the requests it is given, by connection.
type fuzzServer struct {
	addr string
	mu   sync.Mutex
	seen map[string][]seenRequest // by client address
}

type seenRequest struct {
	req  *http.Request
	body []byte
}

func newFuzzServer(t testing.TB) *fuzzServer {
	fs := &fuzzServer{seen: map[string][]seenRequest{}}
	s := serveWith(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			body = append(body, "<read error>"...)
		}
		r2 := r.Clone(r.Context())
		fs.mu.Lock()
		fs.seen[r.RemoteAddr] = append(fs.seen[r.RemoteAddr], seenRequest{r2, body})
		fs.mu.Unlock()
		w.Header().Set("Content-Length", "2") // an HTTP/1.0 client's connection may stay
		w.Write([]byte("ok"))
	}), ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 64 << 10,
		// A client's end of its bytes (its FIN) that came with them may go
		// unseen by the inline path until the idle timeout: short.
		IdleTimeout: 10 * time.Millisecond})
	fs.addr = strings.TrimPrefix(s.URL, "http://")
	return fs
}

// send writes b on a new connection, closes its write side, reads until
// the server closes, and returns the requests the handler was given.
func (fs *fuzzServer) send(t *testing.T, b []byte) []seenRequest {
	c, err := net.Dial("tcp", fs.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("%q: reading the answers: %v", b, err)
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	key := c.LocalAddr().String()
	seen := fs.seen[key]
	delete(fs.seen, key)
	return seen
}

// FuzzServerRequests sends bytes to a real gateway Server and wants its
// handler to be given the requests, and only those, that the ordinary
// path alone reads from them, one after another on the connection until
// one is refused, incomplete or closes it: whichever requests took the
// fast path (inside the raw read, or after a slow one), none was read
// otherwise.
func FuzzServerRequests(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s + nextRequest))
	}
	fs := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 || strings.HasPrefix(h2cPreface, string(b[:min(len(b), len(h2cPreface))])) {
			return // (the start of) the HTTP/2 preface: net/http's HTTP/2 server's
		}
		var want []seenRequest
		cutBody := false // the last request's body did not come whole
		for rest := b; len(rest) > 0; {
			req, body, n, refused := slowRequest(rest, 64<<10)
			if strings.HasPrefix(refused, "body: ") {
				cutBody = true
				break
			}
			if refused != "" {
				break
			}
			want = append(want, seenRequest{req, body})
			rest = rest[n:]
			if req.Close {
				break
			}
		}
		got := fs.send(t, b)
		if cutBody && len(got) == len(want)+1 {
			// The handler was given the request whose body was cut
			// short, as the slow path would give it: its body is
			// not compared.
			got = got[:len(want)]
		}
		for i := range max(len(got), len(want)) {
			switch {
			case i >= len(got):
				t.Fatalf("%q: request %d, %s %s, never reached the handler", b, i, want[i].req.Method, want[i].req.RequestURI)
			case i >= len(want):
				t.Fatalf("%q: the handler was given request %d, %s %s, which the slow path does not read", b, i, got[i].req.Method, got[i].req.RequestURI)
			}
			if d := sameRequest(got[i].req, got[i].body, want[i].req, want[i].body); d != "" {
				t.Fatalf("%q: request %d: %s", b, i, d)
			}
		}
	})
}

// FuzzFinalHead: the response header whose Connection field the upgrade
// path (headConn) reads is the one net/http's transport takes for the
// final response: the first that http.ReadResponse reads with a status
// other than 1xx, or 101, after any interim ones.
func FuzzFinalHead(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add([]byte(s))
	}
	for _, s := range []string{
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close, X-A\r\n\r\n",
		"HTTP/1.1  100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close, X-A\r\n\r\n",
		"HTTP/1.1 100\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
		"HTTP/1.1 100 Continue\n\nHTTP/1.1 200 OK\nConnection: close\n\n",
		"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00",
		"HTTP/1.1 199\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
		"HTTP/1.0 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		src := bytes.NewReader(b)
		br := bufio.NewReaderSize(src, len(b)+16)
		for {
			start := len(b) - src.Len() - br.Buffered()
			res, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
			if err != nil {
				return
			}
			if res.StatusCode >= 100 && res.StatusCode <= 199 && res.StatusCode != http.StatusSwitchingProtocols {
				continue
			}
			end := len(b) - src.Len() - br.Buffered()
			if got := finalHead(b); !bytes.Equal(got, b[start:end]) {
				t.Fatalf("%q: finalHead %q, the transport's final response %q", b, got, b[start:end])
			}
			if switched := statusCode(b[start:end]) == "101"; switched != (res.StatusCode == http.StatusSwitchingProtocols) {
				t.Fatalf("%q: statusCode says 101 %v, ReadResponse %d", b, switched, res.StatusCode)
			}
			return
		}
	})
}
