package flow

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
)

// fullReads returns exactly len(p) bytes per Read while data lasts, so Copy turns to pipeline.
type fullReads struct {
	r     io.Reader
	reads int
}

func (f *fullReads) Read(p []byte) (int, error) {
	f.reads++
	n, err := io.ReadFull(f.r, p)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = nil // the tail; EOF comes with the next Read
	}
	return n, err
}

// A bulk copy (every read fills the buffer) runs as a pipeline and delivers the bytes in order.
func TestCopyBulk(t *testing.T) {
	data := make([]byte, 10<<20+12345) // not a multiple of the buffer
	for i := range data {
		data[i] = byte(i * 7 / 13)
	}
	src := &fullReads{r: bytes.NewReader(data)}
	h := sha256.New()
	if err := Copy(h, src); err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("the copy differs from the source")
	}
	if src.reads < len(data)/bufSize {
		t.Fatalf("%d reads for %d bytes", src.reads, len(data))
	}
}

// failAfter fails every Write after n.
type failAfter struct{ n int }

var errWrite = errors.New("write failed")

func (f *failAfter) Write(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errWrite
	}
	f.n--
	return len(p), nil
}

// A failed write in a pipeline returns at once; the reader, blocked in Read, ends when the flow's
// abort closes the source (goleak checks that it does).
func TestCopyBulkWriteFails(t *testing.T) {
	pr, pw := io.Pipe()
	go func() {
		buf := make([]byte, bufSize)
		for {
			if _, err := pw.Write(buf); err != nil {
				return
			}
		}
	}()
	err := Copy(&failAfter{n: 3}, &fullReads{r: pr})
	if !errors.Is(err, errWrite) {
		t.Fatalf("Copy = %v, want the write's error", err)
	}
	pr.CloseWithError(errors.New("aborted")) // what Join's abort does
}

// A read error after bulk data comes back as the read's error, after the data.
func TestCopyBulkReadFails(t *testing.T) {
	errRead := errors.New("reset")
	src := io.MultiReader(&fullReads{r: bytes.NewReader(make([]byte, 3*bufSize))}, errReader{errRead})
	var got bytes.Buffer
	if err := Copy(&got, src); !errors.Is(err, errRead) {
		t.Fatalf("Copy = %v, want the read's error", err)
	}
	if got.Len() != 3*bufSize {
		t.Fatalf("copied %d bytes before the error, want %d", got.Len(), 3*bufSize)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
