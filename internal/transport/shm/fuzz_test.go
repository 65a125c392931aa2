package shm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/gorovod/gorovod/internal/transport"
)

var setupSeeds = map[string][]byte{
	"offer":      (&setupMsg{Type: msgOffer, Offer: offer{Slots: 8, SlotBytes: 262144, Name: "gorovod-job-e0-1to0-0123456789abcdef"}}).encode(),
	"offer-path": (&setupMsg{Type: msgOffer, Offer: offer{Slots: 8, SlotBytes: 4096, Name: "gorovod-job-e0-1to0-../../etc/pass"}}).encode(),
	"offer-none": (&setupMsg{Type: msgOffer, Offer: offer{Slots: 1 << 31, SlotBytes: 0}}).encode(),
	"ack":        (&setupMsg{Type: msgAck, Status: ackFailed}).encode(),
	"short":      []byte("GRVS\x01\x01\x00"),
	"junk":       []byte("\x00\xff"),
}

// FuzzDecodeSetup: decoding and validating an offer never panics, errors
// wrap ErrMalformed, and what decodes re-encodes to the same bytes.
func FuzzDecodeSetup(f *testing.F) {
	for _, b := range setupSeeds {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeSetup(b)
		if err != nil {
			if !errors.Is(err, transport.ErrMalformed) {
				t.Fatalf("decode error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if !bytes.Equal(m.encode(), b) {
			t.Fatalf("decodeSetup(%x) = %+v re-encodes to %x", b, m, m.encode())
		}
		if m.Type == msgOffer {
			_ = checkGeometry(m.Offer.Slots, m.Offer.SlotBytes)
			if checkName(m.Offer.Name, namePrefix("job", 0, 1, 0)) == nil && filepath.Base(m.Offer.Name) != m.Offer.Name {
				t.Fatalf("checkName accepted %q, which is not a plain file name", m.Offer.Name)
			}
		}
	})
}

// FuzzReadSetup: reading from arbitrary bytes never panics.
func FuzzReadSetup(f *testing.F) {
	for _, b := range setupSeeds {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := readSetup(bytes.NewReader(b))
		if err != nil && !errors.Is(err, transport.ErrMalformed) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("readSetup error %v", err)
		}
	})
}

// TestWriteCorpus regenerates the committed seed corpora:
// GOROVOD_WRITE_CORPUS=1 go test -run TestWriteCorpus .
func TestWriteCorpus(t *testing.T) {
	if os.Getenv("GOROVOD_WRITE_CORPUS") == "" {
		t.Skip("set GOROVOD_WRITE_CORPUS=1 to rewrite testdata/fuzz")
	}
	for _, target := range []string{"FuzzDecodeSetup", "FuzzReadSetup"} {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range setupSeeds {
			data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
