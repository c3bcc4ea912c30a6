// Package pattern is the byte stream that the test images send and check: byte k is k mod 251, so
// any length has a checksum a test can compute without storing the data.
package pattern

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
)

// Reader is an endless reader of the pattern, starting at byte 0.
type Reader struct{ off int64 }

func (r *Reader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte((r.off + int64(i)) % 251)
	}
	r.off += int64(len(p))
	return len(p), nil
}

// SHA256 is the hex SHA-256 of the first n bytes of the pattern.
func SHA256(n int64) string {
	h := sha256.New()
	_, _ = io.CopyN(h, &Reader{}, n)
	return hex.EncodeToString(h.Sum(nil))
}

// Hash accumulates a SHA-256 to compare with SHA256.
type Hash struct{ h hash.Hash }

// Hasher returns an empty Hash.
func Hasher() *Hash { return &Hash{h: sha256.New()} }

func (h *Hash) Write(p []byte) (int, error) { return h.h.Write(p) }

// Sum is the hex digest of what was written.
func (h *Hash) Sum() string { return hex.EncodeToString(h.h.Sum(nil)) }
