package httproute

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
)

// HTTP/1.x message heads are read by hand, not with net/http, so that the bytes forwarded are the
// bytes the client sent: header order, case and spacing reach the handler unchanged.

const (
	maxHeadBytes      = 64 << 10 // request or response line plus header fields
	maxChunkLineBytes = 4 << 10  // chunk size line with extensions
)

var (
	errHeadTooLarge = errors.New("httproute: message head too large")
	errMalformed    = errors.New("httproute: malformed HTTP/1.x message")
)

// field is one header field line as sent.
type field struct{ name, value string }

// head is a parsed HTTP/1.x request or response head.
type head struct {
	raw    []byte // verbatim, through the empty line
	fields []field
	header http.Header

	// request line
	method, target string
	// status line
	status int

	minor         int   // HTTP/1.minor
	contentLength int64 // -1 when absent
	chunked       bool  // Transfer-Encoding ends with chunked
	otherCoding   bool  // Transfer-Encoding present, not ending with chunked
	connClose     bool
	connKeepAlive bool
	connUpgrade   bool
}

// keepAlive reports whether the sender wants the connection kept after this message.
func (h *head) keepAlive() bool {
	if h.connClose {
		return false
	}
	return h.minor >= 1 || h.connKeepAlive
}

// readHead reads one message head from r. started reports whether any byte of it was read, so
// that a caller can tell an idle connection that closed from a truncated message. Empty lines
// before a request line are skipped (RFC 9112 section 2.2).
func readHead(r *bufio.Reader, skipEmpty bool) (h *head, started bool, err error) {
	h = &head{contentLength: -1}
	var lines [][]byte
	skipped := 0
	for {
		line, err := readLine(r, maxHeadBytes-len(h.raw))
		if len(line) > 0 {
			started = true
		}
		if err != nil {
			if errors.Is(err, io.EOF) && started {
				err = io.ErrUnexpectedEOF
			}
			return nil, started, err
		}
		body := trimEOL(line)
		if len(body) == 0 && len(lines) == 0 && skipEmpty {
			if skipped += len(line); skipped > maxHeadBytes {
				return nil, started, errHeadTooLarge
			}
			continue
		}
		h.raw = append(h.raw, line...)
		if len(body) == 0 {
			break
		}
		lines = append(lines, body)
	}
	if len(lines) == 0 {
		return nil, true, fmt.Errorf("%w: empty head", errMalformed)
	}
	h.header = make(http.Header, len(lines)-1)
	for _, l := range lines[1:] {
		if l[0] == ' ' || l[0] == '\t' {
			return nil, true, fmt.Errorf("%w: obsolete line folding", errMalformed)
		}
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok || !isToken(string(name)) {
			return nil, true, fmt.Errorf("%w: header line %q", errMalformed, l)
		}
		f := field{name: string(name), value: string(bytes.Trim(value, " \t"))}
		h.fields = append(h.fields, f)
		h.header[textproto.CanonicalMIMEHeaderKey(f.name)] = append(h.header[textproto.CanonicalMIMEHeaderKey(f.name)], f.value)
	}
	// The first line first: the framing depends on the version.
	if err := h.parseFirst(string(lines[0])); err != nil {
		return h, true, err
	}
	if err := h.parseFraming(); err != nil {
		return nil, true, err
	}
	return h, true, nil
}

// readLine reads through the next '\n', at most max bytes.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		if len(line)+len(frag) > max {
			return nil, errHeadTooLarge
		}
		line = append(line, frag...)
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return line, err
		}
	}
}

func trimEOL(l []byte) []byte {
	l = bytes.TrimSuffix(l, []byte("\n"))
	return bytes.TrimSuffix(l, []byte("\r"))
}

// parseFirst parses the request line or, when it starts with HTTP/, the status line.
func (h *head) parseFirst(l string) error {
	if strings.HasPrefix(l, "HTTP/") {
		version, rest, _ := strings.Cut(l, " ")
		code, _, _ := strings.Cut(rest, " ")
		minor, ok := httpMinor(version)
		n, err := strconv.Atoi(code)
		if !ok || err != nil || len(code) != 3 || n < 100 {
			return fmt.Errorf("%w: status line %q", errMalformed, l)
		}
		h.minor, h.status = minor, n
		return nil
	}
	parts := strings.Split(l, " ")
	if len(parts) != 3 || !isToken(parts[0]) || !validTarget(parts[1]) {
		return fmt.Errorf("%w: request line %q", errMalformed, l)
	}
	minor, ok := httpMinor(parts[2])
	if !ok {
		return fmt.Errorf("%w: request line %q", errMalformed, l)
	}
	h.method, h.target, h.minor = parts[0], parts[1], minor
	return nil
}

func httpMinor(v string) (int, bool) {
	switch v {
	case "HTTP/1.0":
		return 0, true
	case "HTTP/1.1":
		return 1, true
	}
	return 0, false
}

func validTarget(t string) bool {
	if t == "" {
		return false
	}
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] == 0x7f {
			return false
		}
	}
	return true
}

func (h *head) parseFraming() error {
	for _, v := range h.header["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			switch strings.ToLower(trimOWS(tok)) {
			case "close":
				h.connClose = true
			case "keep-alive":
				h.connKeepAlive = true
			case "upgrade":
				h.connUpgrade = true
			}
		}
	}
	if tes := h.header["Transfer-Encoding"]; len(tes) > 0 {
		// HTTP/1.0 has no transfer codings: servers that ignore the header would read a request's
		// chunks as the next request (RFC 9112 6.1: faulty framing).
		if h.minor == 0 && h.method != "" {
			return fmt.Errorf("%w: Transfer-Encoding in HTTP/1.0", errMalformed)
		}
		var last string
		for _, v := range tes {
			for tok := range strings.SplitSeq(v, ",") {
				if tok = trimOWS(tok); tok != "" {
					last = tok
				}
			}
		}
		h.chunked = strings.EqualFold(last, "chunked")
		h.otherCoding = !h.chunked
	}
	for _, v := range h.header["Content-Length"] {
		for tok := range strings.SplitSeq(v, ",") {
			tok = trimOWS(tok)
			n, err := strconv.ParseInt(tok, 10, 64)
			if err != nil || !digits(tok) || (h.contentLength >= 0 && n != h.contentLength) {
				return fmt.Errorf("%w: Content-Length %q", errMalformed, v)
			}
			h.contentLength = n
		}
	}
	return nil
}

// trimOWS trims HTTP's optional whitespace (SP and HTAB) only: strings.TrimSpace would also take
// Unicode spaces, which other parsers do not, and so read a field differently than they do.
func trimOWS(s string) string { return strings.Trim(s, " \t") }

// digits reports whether s is one or more ASCII digits: Content-Length has no sign.
func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// relay moves one message body (or raw bytes) from r to w. It flushes w whenever it is about to
// wait for r, so that streamed bodies (server-sent events, chunks) are not held back, while
// bodies that arrive at once are written in large pieces. tee, when set, sees the body's data
// (without chunk framing).
type relay struct {
	r   *bufio.Reader
	w   *bufio.Writer
	tee io.Writer
}

// wait flushes w before a read from r that may block.
func (x relay) wait() error {
	if x.r.Buffered() == 0 {
		return x.w.Flush()
	}
	return nil
}

// copyN copies n bytes; n < 0 copies until r ends.
func (x relay) copyN(n int64) error {
	for n != 0 {
		if err := x.wait(); err != nil {
			return err
		}
		if _, err := x.r.Peek(1); err != nil {
			if n < 0 && errors.Is(err, io.EOF) {
				return x.w.Flush()
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		p, _ := x.r.Peek(x.r.Buffered())
		if n > 0 && int64(len(p)) > n {
			p = p[:n]
		}
		if _, err := x.w.Write(p); err != nil {
			return err
		}
		if x.tee != nil {
			x.tee.Write(p) //nolint:errcheck // a capture never fails
		}
		x.r.Discard(len(p)) //nolint:errcheck // p is buffered
		if n > 0 {
			n -= int64(len(p))
		}
	}
	return x.w.Flush()
}

// chunked copies a chunked body verbatim: size lines with their extensions, data, and trailers.
func (x relay) chunked() error {
	for {
		line, err := x.line(maxChunkLineBytes)
		if err != nil {
			return err
		}
		size, err := chunkSize(line)
		if err != nil {
			return err
		}
		if size == 0 {
			break
		}
		if err := x.copyN(size); err != nil {
			return err
		}
		crlf, err := x.line(2)
		if err != nil || len(trimEOL(crlf)) != 0 {
			return fmt.Errorf("%w: no CRLF after chunk data", errMalformed)
		}
	}
	// Trailer fields, through the empty line.
	total := 0
	for {
		line, err := x.line(maxHeadBytes - total)
		if err != nil {
			return err
		}
		total += len(line)
		if len(trimEOL(line)) == 0 {
			return x.w.Flush()
		}
	}
}

// line reads one line and writes it through.
func (x relay) line(max int) ([]byte, error) {
	if err := x.wait(); err != nil {
		return nil, err
	}
	line, err := readLine(x.r, max)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	_, err = x.w.Write(line)
	return line, err
}

func chunkSize(line []byte) (int64, error) {
	s := string(trimEOL(line))
	if i := strings.IndexByte(s, ';'); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimRight(s, " \t")
	n, err := strconv.ParseInt(s, 16, 64)
	if err != nil || n < 0 || s == "" || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("%w: chunk size %q", errMalformed, line)
	}
	return n, nil
}

// requestBody copies the body of request h; a request without Content-Length or chunked
// Transfer-Encoding has none.
func (x relay) requestBody(h *head) error {
	switch {
	case h.chunked:
		return x.chunked()
	case h.contentLength > 0:
		return x.copyN(h.contentLength)
	}
	return x.w.Flush()
}

// hasBody reports whether request h is followed by a body.
func (h *head) hasBody() bool { return h.chunked || h.contentLength > 0 }

// responseEnd says how the body of a response ends.
type responseEnd int

const (
	endNone    responseEnd = iota // no body
	endLength                     // Content-Length bytes
	endChunked                    // chunked framing
	endClose                      // the upstream closes the connection
)

// responseFraming applies RFC 9112 section 6.3 to response resp of a request with method.
func responseFraming(method string, resp *head) responseEnd {
	switch {
	case method == http.MethodHead, resp.status < 200, resp.status == 204, resp.status == 304:
		return endNone
	case method == http.MethodConnect && resp.status < 300:
		return endNone // the tunnel starts; the caller joins the connections
	case resp.chunked:
		return endChunked
	case resp.otherCoding:
		return endClose
	case resp.contentLength >= 0:
		return endLength
	}
	return endClose
}

// responseBody copies a response body that ends as end says.
func (x relay) responseBody(end responseEnd, resp *head) error {
	switch end {
	case endLength:
		return x.copyN(resp.contentLength)
	case endChunked:
		return x.chunked()
	case endClose:
		return x.copyN(-1)
	}
	return x.w.Flush()
}
