package pattern

import (
	"bytes"
	"io"
	"testing"
)

// The stream must not depend on how the reader is called, or a checksum would depend on buffer sizes.
func TestReaderIndependentOfReadSizes(t *testing.T) {
	want := make([]byte, 1000)
	for i := range want {
		want[i] = byte(i % 251)
	}
	for _, size := range []int{1, 7, 250, 251, 999, 4096} {
		got, err := io.ReadAll(io.LimitReader(&chunked{r: &Reader{}, size: size}, 1000))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("read size %d: stream differs", size)
		}
	}
	if SHA256(3) != "ae4b3280e56e2faf83f414a6e3dabe9d5fbe18976544c05fed121accb85b53fc" {
		t.Errorf("SHA256(3) = %s, want the SHA-256 of bytes 0,1,2", SHA256(3))
	}
}

type chunked struct {
	r    io.Reader
	size int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(p) > c.size {
		p = p[:c.size]
	}
	return c.r.Read(p)
}
