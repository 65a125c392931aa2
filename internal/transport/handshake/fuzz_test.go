package handshake

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/gorovod/gorovod/internal/transport"
)

func fuzzSeeds(f *testing.F) {
	for _, m := range []message{
		{Type: typeHello, Purpose: 1, Epoch: 3, From: 0, To: 1},
		{Type: typeChallenge, Epoch: 3, Rank: 1},
		{Type: typeProof},
		{Type: typeVerdict, Code: codeEpoch, Epoch: 2, Rank: 1},
	} {
		f.Add(m.encode())
	}
	f.Add([]byte("GRVH"))
	f.Add([]byte{})
}

// FuzzDecode: decode never panics, and whatever decodes re-encodes to the
// same bytes (the format is canonical, which the MAC transcript relies on).
func FuzzDecode(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decode(b)
		if err != nil {
			if !errors.Is(err, transport.ErrMalformed) {
				t.Fatalf("decode error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if !bytes.Equal(m.encode(), b) {
			t.Fatalf("decode(%x) = %+v re-encodes to %x", b, m, m.encode())
		}
	})
}

// FuzzReadMessage: reading from a stream of arbitrary bytes never panics and
// fails with ErrMalformed or an EOF.
func FuzzReadMessage(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := readMessage(bytes.NewReader(b))
		if err != nil && !errors.Is(err, transport.ErrMalformed) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("readMessage error %v", err)
		}
	})
}
