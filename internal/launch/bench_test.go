package launch

import (
	"io"
	"testing"
)

// BenchmarkLineWriter measures prefixing of typical log lines.
func BenchmarkLineWriter(b *testing.B) {
	sink, _ := NewSinks(io.Discard, nil)
	w := NewLineWriter(sink, Prefix(3, "stdout"), nil)
	line := []byte("epoch 3 step 120 loss 0.3412 accuracy 0.8821 images/s 10234.5\n")
	var chunk []byte
	for len(chunk) < 4096 {
		chunk = append(chunk, line...)
	}
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	for range b.N {
		_, _ = w.Write(chunk)
	}
}
