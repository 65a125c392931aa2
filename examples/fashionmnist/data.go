package main

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// Image geometry and class count of Fashion-MNIST (the synthetic set uses the same).
const (
	imageSide  = 28
	imageSize  = imageSide * imageSide
	numClasses = 10
)

// DefaultDataDir is where Debian's dataset-fashion-mnist package puts the files.
const DefaultDataDir = "/usr/share/datasets/fashion-mnist"

// errBadIDX marks a file that is not a well-formed IDX file of the expected kind.
var errBadIDX = errors.New("malformed IDX file")

// Dataset is a set of images as float32 pixels in [0,1], row-major, one
// image of Dim values per sample, with a class label per sample.
type Dataset struct {
	X   []float32
	Y   []uint8
	Dim int
}

// Len is the number of samples.
func (d *Dataset) Len() int { return len(d.Y) }

// Sample returns the pixels of sample i.
func (d *Dataset) Sample(i int) []float32 { return d.X[i*d.Dim : (i+1)*d.Dim] }

// Head returns a view of the first n samples (all of them when n <= 0 or n >= Len).
func (d *Dataset) Head(n int) *Dataset {
	if n <= 0 || n >= d.Len() {
		return d
	}
	return &Dataset{X: d.X[:n*d.Dim], Y: d.Y[:n], Dim: d.Dim}
}

// IDX element type code for unsigned bytes, the only one Fashion-MNIST uses.
const idxUbyte = 0x08

// readIDX parses an IDX file (plain or gzip-compressed, detected from its
// first bytes) holding unsigned bytes, and returns its dimensions and data.
func readIDX(r io.Reader) (dims []int, data []byte, err error) {
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: gzip header: %w", errBadIDX, err)
		}
		defer zr.Close()
		br = bufio.NewReader(zr)
	}
	var head [4]byte
	if _, err := io.ReadFull(br, head[:]); err != nil {
		return nil, nil, fmt.Errorf("%w: header: %w", errBadIDX, err)
	}
	if head[0] != 0 || head[1] != 0 {
		return nil, nil, fmt.Errorf("%w: magic starts with %#02x %#02x, want 0x00 0x00", errBadIDX, head[0], head[1])
	}
	if head[2] != idxUbyte {
		return nil, nil, fmt.Errorf("%w: element type %#02x, want %#02x (unsigned byte)", errBadIDX, head[2], idxUbyte)
	}
	nd := int(head[3])
	if nd == 0 || nd > 4 {
		return nil, nil, fmt.Errorf("%w: %d dimensions, want 1 to 4", errBadIDX, nd)
	}
	total := 1
	for i := 0; i < nd; i++ {
		var v uint32
		if err := binary.Read(br, binary.BigEndian, &v); err != nil {
			return nil, nil, fmt.Errorf("%w: dimension %d: %w", errBadIDX, i, err)
		}
		// Bound the size before allocating: no dataset here is near 1 GiB.
		if v == 0 || uint64(total)*uint64(v) > 1<<30 {
			return nil, nil, fmt.Errorf("%w: dimension %d is %d (total too large or zero)", errBadIDX, i, v)
		}
		total *= int(v)
		dims = append(dims, int(v))
	}
	data = make([]byte, total)
	if _, err := io.ReadFull(br, data); err != nil {
		return nil, nil, fmt.Errorf("%w: %d data bytes expected: %w", errBadIDX, total, err)
	}
	if n, _ := br.Read(make([]byte, 1)); n != 0 {
		return nil, nil, fmt.Errorf("%w: trailing bytes after %d data bytes", errBadIDX, total)
	}
	return dims, data, nil
}

// openIDX opens dir/name, or dir/name.gz when the plain file is absent.
func openIDX(dir, name string) (*os.File, error) {
	f, err := os.Open(filepath.Join(dir, name))
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return f, err
	}
	return os.Open(filepath.Join(dir, name+".gz"))
}

func readIDXFile(dir, name string) ([]int, []byte, error) {
	f, err := openIDX(dir, name)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	dims, data, err := readIDX(f)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return dims, data, nil
}

// loadSplit reads one split ("train" or "t10k") of an MNIST-style directory.
func loadSplit(dir, prefix string) (*Dataset, error) {
	idims, pix, err := readIDXFile(dir, prefix+"-images-idx3-ubyte")
	if err != nil {
		return nil, err
	}
	ldims, labels, err := readIDXFile(dir, prefix+"-labels-idx1-ubyte")
	if err != nil {
		return nil, err
	}
	if len(idims) != 3 || len(ldims) != 1 {
		return nil, fmt.Errorf("%s: %w: images have %d dimensions (want 3), labels %d (want 1)", prefix, errBadIDX, len(idims), len(ldims))
	}
	if idims[0] != ldims[0] {
		return nil, fmt.Errorf("%s: %w: %d images but %d labels", prefix, errBadIDX, idims[0], ldims[0])
	}
	for i, l := range labels {
		if int(l) >= numClasses {
			return nil, fmt.Errorf("%s: %w: label %d of sample %d is not below %d", prefix, errBadIDX, l, i, numClasses)
		}
	}
	d := &Dataset{X: make([]float32, len(pix)), Y: labels, Dim: idims[1] * idims[2]}
	for i, p := range pix {
		d.X[i] = float32(p) / 255
	}
	return d, nil
}

// LoadFashionMNIST reads the training and test sets from dir, which holds
// the four IDX files under their usual names, plain or with a .gz suffix.
func LoadFashionMNIST(dir string) (train, test *Dataset, err error) {
	if train, err = loadSplit(dir, "train"); err != nil {
		return nil, nil, err
	}
	if test, err = loadSplit(dir, "t10k"); err != nil {
		return nil, nil, err
	}
	if train.Dim != test.Dim {
		return nil, nil, fmt.Errorf("%w: training images have %d pixels, test images %d", errBadIDX, train.Dim, test.Dim)
	}
	return train, test, nil
}

// Synthetic returns a generated stand-in for Fashion-MNIST: 28x28 images
// in [0,1] on a dark background, ten classes, each drawn from a class
// template (a few bright blobs) that is shifted by up to two pixels, has its
// brightness varied and gets noise, so a linear model does well but not
// perfectly. The same seed always gives the same bytes.
func Synthetic(nTrain, nTest int, seed uint64) (train, test *Dataset) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed_f00d))
	type blob struct{ cx, cy, r, v float64 }
	templates := make([][]blob, numClasses)
	for c := range templates {
		for k := 0; k < 4; k++ {
			templates[c] = append(templates[c], blob{
				cx: 6 + 16*rng.Float64(), cy: 6 + 16*rng.Float64(),
				r: 2 + 3*rng.Float64(), v: 0.5 + 0.5*rng.Float64(),
			})
		}
	}
	gen := func(n int) *Dataset {
		d := &Dataset{X: make([]float32, n*imageSize), Y: make([]uint8, n), Dim: imageSize}
		for i := 0; i < n; i++ {
			c := rng.IntN(numClasses)
			d.Y[i] = uint8(c)
			dx, dy := float64(rng.IntN(5)-2), float64(rng.IntN(5)-2)
			gain := 0.7 + 0.6*rng.Float64()
			img := d.Sample(i)
			for _, b := range templates[c] {
				for y := 0; y < imageSide; y++ {
					for x := 0; x < imageSide; x++ {
						ex, ey := float64(x)-b.cx-dx, float64(y)-b.cy-dy
						img[y*imageSide+x] += float32(gain * b.v * math.Exp(-(ex*ex+ey*ey)/(2*b.r*b.r)))
					}
				}
			}
			for p := range img {
				v := img[p] + float32(0.15*rng.NormFloat64())
				// Keep the background exactly zero like real scans (and sparse).
				switch {
				case v < 0.05:
					v = 0
				case v > 1:
					v = 1
				}
				img[p] = v
			}
		}
		return d
	}
	return gen(nTrain), gen(nTest)
}
