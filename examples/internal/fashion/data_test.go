package fashion

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// idxBytes encodes an unsigned-byte IDX file with the given dimensions.
func idxBytes(dims []int, data []byte) []byte {
	var b bytes.Buffer
	b.Write([]byte{0, 0, idxUbyte, byte(len(dims))})
	for _, d := range dims {
		_ = binary.Write(&b, binary.BigEndian, uint32(d))
	}
	b.Write(data)
	return b.Bytes()
}

func gzipped(t *testing.T, p []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// writeSplit writes n images of side x side pixels (pixel value = sample
// index*10 + position) and their labels (i mod 10) as prefix-* files.
func writeSplit(t *testing.T, dir, prefix string, n, side int, gz bool) {
	t.Helper()
	pix := make([]byte, n*side*side)
	for i := range pix {
		pix[i] = byte(i/(side*side)*10 + i%(side*side))
	}
	labels := make([]byte, n)
	for i := range labels {
		labels[i] = byte(i % 10)
	}
	files := map[string][]byte{
		prefix + "-images-idx3-ubyte": idxBytes([]int{n, side, side}, pix),
		prefix + "-labels-idx1-ubyte": idxBytes([]int{n}, labels),
	}
	for name, content := range files {
		if gz {
			name, content = name+".gz", gzipped(t, content)
		}
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLoadIDXPlainAndGzip(t *testing.T) {
	for _, gz := range []bool{false, true} {
		dir := t.TempDir()
		writeSplit(t, dir, "train", 3, 2, gz)
		writeSplit(t, dir, "t10k", 2, 2, !gz) // the two splits may differ in form
		train, test, err := Load(dir)
		if err != nil {
			t.Fatalf("gzip=%v: %v", gz, err)
		}
		if train.Len() != 3 || test.Len() != 2 || train.Dim != 4 || test.Dim != 4 {
			t.Fatalf("gzip=%v: got %d/%d samples of %d/%d pixels, want 3/2 of 4", gz, train.Len(), test.Len(), train.Dim, test.Dim)
		}
		// Sample 2, pixel 3 was written as 2*10+3 = 23.
		if got, want := train.Sample(2)[3], float32(23)/255; got != want {
			t.Errorf("gzip=%v: sample 2 pixel 3 is %v, want %v", gz, got, want)
		}
		if !bytes.Equal(train.Y, []byte{0, 1, 2}) {
			t.Errorf("gzip=%v: labels %v, want [0 1 2]", gz, train.Y)
		}
		if h := train.Head(2); h.Len() != 2 || len(h.X) != 8 {
			t.Errorf("Head(2) has %d samples and %d pixels, want 2 and 8", h.Len(), len(h.X))
		}
	}
}

func TestReadIDXRejectsMalformed(t *testing.T) {
	good := idxBytes([]int{2, 2}, []byte{1, 2, 3, 4})
	cases := map[string][]byte{
		"empty":           nil,
		"bad magic":       append([]byte{1}, good[1:]...),
		"float elements":  append([]byte{0, 0, 0x0d}, good[3:]...),
		"no dimensions":   {0, 0, idxUbyte, 0},
		"zero dimension":  idxBytes([]int{0, 2}, nil),
		"truncated data":  good[:len(good)-1],
		"trailing bytes":  append(append([]byte{}, good...), 9),
		"huge dimensions": idxBytes([]int{1 << 20, 1 << 20}, nil),
		"bad gzip":        {0x1f, 0x8b, 0, 0},
	}
	for name, in := range cases {
		if _, _, err := readIDX(bytes.NewReader(in)); !errors.Is(err, ErrBadIDX) {
			t.Errorf("%s: error %v, want ErrBadIDX", name, err)
		}
	}
	dims, data, err := readIDX(bytes.NewReader(good))
	if err != nil || len(dims) != 2 || len(data) != 4 {
		t.Fatalf("good file: dims %v, %d bytes, %v", dims, len(data), err)
	}
}

func TestLoadReportsMissingAndInconsistentFiles(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := Load(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty directory: %v, want a not-exist error", err)
	}
	writeSplit(t, dir, "train", 3, 2, false)
	// Labels for a different number of images.
	if err := os.WriteFile(filepath.Join(dir, "train-labels-idx1-ubyte"), idxBytes([]int{4}, []byte{0, 1, 2, 3}), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := Load(dir)
	if !errors.Is(err, ErrBadIDX) || !strings.Contains(err.Error(), "3 images but 4 labels") {
		t.Errorf("count mismatch: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "train-labels-idx1-ubyte"), idxBytes([]int{3}, []byte{0, 10, 2}), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(dir); !errors.Is(err, ErrBadIDX) || !strings.Contains(err.Error(), "label 10 of sample 1") {
		t.Errorf("label out of range: %v", err)
	}
}

func TestSyntheticIsDeterministicAndWellFormed(t *testing.T) {
	a, at := Synthetic(500, 100, 7)
	b, _ := Synthetic(500, 100, 7)
	c, _ := Synthetic(500, 100, 8)
	if a.Len() != 500 || at.Len() != 100 || a.Dim != ImageSize {
		t.Fatalf("got %d/%d samples of %d pixels, want 500/100 of %d", a.Len(), at.Len(), a.Dim, ImageSize)
	}
	if checksum(a) != checksum(b) {
		t.Error("the same seed gave different data")
	}
	if checksum(a) == checksum(c) {
		t.Error("different seeds gave the same data")
	}
	var perClass [NumClasses]int
	for _, y := range a.Y {
		perClass[y]++
	}
	for k, n := range perClass {
		if n < 20 {
			t.Errorf("class %d has %d of 500 samples", k, n)
		}
	}
	zeros := 0
	for _, v := range a.X {
		if v < 0 || v > 1 {
			t.Fatalf("pixel value %v outside [0,1]", v)
		}
		if v == 0 {
			zeros++
		}
	}
	if frac := float64(zeros) / float64(len(a.X)); frac < 0.3 || frac > 0.95 {
		t.Errorf("%.0f%% of pixels are background, want a dark background with visible shapes", 100*frac)
	}
}

// checksum is the SHA-256 of a data set's labels and pixels.
func checksum(d *Dataset) string {
	h := sha256.New()
	h.Write(d.Y)
	for _, v := range d.X {
		_ = binary.Write(h, binary.LittleEndian, v)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestWriteIDXRoundTrips(t *testing.T) {
	for _, gz := range []bool{false, true} {
		dir := t.TempDir()
		train, test := Synthetic(30, 10, 3)
		if err := errors.Join(WriteIDX(dir, "train", train, ImageSide, gz), WriteIDX(dir, "t10k", test, ImageSide, gz)); err != nil {
			t.Fatal(err)
		}
		gotTrain, gotTest, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range [][2]*Dataset{{train, gotTrain}, {test, gotTest}} {
			for i, v := range p[0].X {
				if w := p[1].X[i]; math.Abs(float64(v-w)) > 0.5/255 {
					t.Fatalf("gzip %v: pixel %d written %v, read %v", gz, i, v, w)
				}
			}
			if !bytes.Equal(p[0].Y, p[1].Y) {
				t.Fatalf("gzip %v: labels differ", gz)
			}
		}
	}
	if err := WriteIDX(t.TempDir(), "train", &Dataset{X: make([]float32, 10), Y: make([]uint8, 1), Dim: 10}, 3, false); err == nil {
		t.Error("10 pixels written as 3x3 images")
	}
}
