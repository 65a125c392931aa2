package handshake

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteCorpus regenerates the committed seed corpora:
// GOROVOD_WRITE_CORPUS=1 go test -run TestWriteCorpus .
func TestWriteCorpus(t *testing.T) {
	if os.Getenv("GOROVOD_WRITE_CORPUS") == "" {
		t.Skip("set GOROVOD_WRITE_CORPUS=1 to rewrite testdata/fuzz")
	}
	seeds := map[string][]byte{
		"hello":     (&message{Type: typeHello, Purpose: 1, Epoch: 3, From: 0, To: 1, Nonce: [32]byte{5}}).encode(),
		"challenge": (&message{Type: typeChallenge, Epoch: 3, Rank: 1, MAC: [32]byte{1}}).encode(),
		"proof":     (&message{Type: typeProof, MAC: [32]byte{2}}).encode(),
		"verdict":   (&message{Type: typeVerdict, Code: codeAuth, Epoch: 3, Rank: 1}).encode(),
		"badtype":   []byte("GRVH\x01\x09"),
		"http":      []byte("GET / HTTP/1.1\r\n"),
	}
	for _, target := range []string{"FuzzDecode", "FuzzReadMessage"} {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range seeds {
			data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
