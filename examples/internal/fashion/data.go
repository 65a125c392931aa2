// Package fashion reads Fashion-MNIST (the IDX files Debian's
// dataset-fashion-mnist installs) and generates a learnable stand-in of the
// same shape, for the examples.
package fashion

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
	ImageSide  = 28
	ImageSize  = ImageSide * ImageSide
	NumClasses = 10
)

// DefaultDataDir is where Debian's dataset-fashion-mnist package puts the files.
const DefaultDataDir = "/usr/share/datasets/fashion-mnist"

// ErrBadIDX marks a file that is not a well-formed IDX file of the expected kind.
var ErrBadIDX = errors.New("malformed IDX file")

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
			return nil, nil, fmt.Errorf("%w: gzip header: %w", ErrBadIDX, err)
		}
		defer zr.Close()
		br = bufio.NewReader(zr)
	}
	var head [4]byte
	if _, err := io.ReadFull(br, head[:]); err != nil {
		return nil, nil, fmt.Errorf("%w: header: %w", ErrBadIDX, err)
	}
	if head[0] != 0 || head[1] != 0 {
		return nil, nil, fmt.Errorf("%w: magic starts with %#02x %#02x, want 0x00 0x00", ErrBadIDX, head[0], head[1])
	}
	if head[2] != idxUbyte {
		return nil, nil, fmt.Errorf("%w: element type %#02x, want %#02x (unsigned byte)", ErrBadIDX, head[2], idxUbyte)
	}
	nd := int(head[3])
	if nd == 0 || nd > 4 {
		return nil, nil, fmt.Errorf("%w: %d dimensions, want 1 to 4", ErrBadIDX, nd)
	}
	total := 1
	for i := 0; i < nd; i++ {
		var v uint32
		if err := binary.Read(br, binary.BigEndian, &v); err != nil {
			return nil, nil, fmt.Errorf("%w: dimension %d: %w", ErrBadIDX, i, err)
		}
		// Bound the size before allocating: no dataset here is near 1 GiB.
		if v == 0 || uint64(total)*uint64(v) > 1<<30 {
			return nil, nil, fmt.Errorf("%w: dimension %d is %d (total too large or zero)", ErrBadIDX, i, v)
		}
		total *= int(v)
		dims = append(dims, int(v))
	}
	data = make([]byte, total)
	if _, err := io.ReadFull(br, data); err != nil {
		return nil, nil, fmt.Errorf("%w: %d data bytes expected: %w", ErrBadIDX, total, err)
	}
	if n, _ := br.Read(make([]byte, 1)); n != 0 {
		return nil, nil, fmt.Errorf("%w: trailing bytes after %d data bytes", ErrBadIDX, total)
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
		return nil, fmt.Errorf("%s: %w: images have %d dimensions (want 3), labels %d (want 1)", prefix, ErrBadIDX, len(idims), len(ldims))
	}
	if idims[0] != ldims[0] {
		return nil, fmt.Errorf("%s: %w: %d images but %d labels", prefix, ErrBadIDX, idims[0], ldims[0])
	}
	for i, l := range labels {
		if int(l) >= NumClasses {
			return nil, fmt.Errorf("%s: %w: label %d of sample %d is not below %d", prefix, ErrBadIDX, l, i, NumClasses)
		}
	}
	d := &Dataset{X: make([]float32, len(pix)), Y: labels, Dim: idims[1] * idims[2]}
	for i, p := range pix {
		d.X[i] = float32(p) / 255
	}
	return d, nil
}

// Load reads the training and test sets from dir, which holds
// the four IDX files under their usual names, plain or with a .gz suffix.
func Load(dir string) (train, test *Dataset, err error) {
	if train, err = loadSplit(dir, "train"); err != nil {
		return nil, nil, err
	}
	if test, err = loadSplit(dir, "t10k"); err != nil {
		return nil, nil, err
	}
	if train.Dim != test.Dim {
		return nil, nil, fmt.Errorf("%w: training images have %d pixels, test images %d", ErrBadIDX, train.Dim, test.Dim)
	}
	return train, test, nil
}

// WriteIDX writes d as the two IDX files of a split (prefix "train" or
// "t10k") in dir, as side x side images of bytes (pixels times 255,
// rounded), gzip-compressed with a .gz suffix when gz is set.
func WriteIDX(dir, prefix string, d *Dataset, side int, gz bool) error {
	if d.Dim != side*side {
		return fmt.Errorf("%d pixels per sample are not %d x %d images", d.Dim, side, side)
	}
	pix := make([]byte, len(d.X))
	for i, v := range d.X {
		pix[i] = byte(math.Round(float64(min(max(v, 0), 1)) * 255))
	}
	files := []struct {
		name string
		dims []int
		data []byte
	}{
		{prefix + "-images-idx3-ubyte", []int{d.Len(), side, side}, pix},
		{prefix + "-labels-idx1-ubyte", []int{d.Len()}, d.Y},
	}
	for _, f := range files {
		if err := writeIDXFile(filepath.Join(dir, f.name), f.dims, f.data, gz); err != nil {
			return err
		}
	}
	return nil
}

func writeIDXFile(path string, dims []int, data []byte, gz bool) (err error) {
	if gz {
		path += ".gz"
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	var w io.Writer = f
	if gz {
		zw := gzip.NewWriter(f)
		defer func() { err = errors.Join(err, zw.Close()) }()
		w = zw
	}
	head := []byte{0, 0, idxUbyte, byte(len(dims))}
	for _, n := range dims {
		head = binary.BigEndian.AppendUint32(head, uint32(n))
	}
	if _, err := w.Write(head); err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

// Synthetic returns a generated stand-in for Fashion-MNIST: 28x28 images
// in [0,1] on a dark background, ten classes, each drawn from a class
// template (a few bright blobs) that is shifted by up to two pixels, has its
// brightness varied and gets noise, so a linear model does well but not
// perfectly. The same seed always gives the same bytes.
func Synthetic(nTrain, nTest int, seed uint64) (train, test *Dataset) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed_f00d))
	type blob struct{ cx, cy, r, v float64 }
	templates := make([][]blob, NumClasses)
	for c := range templates {
		for k := 0; k < 4; k++ {
			templates[c] = append(templates[c], blob{
				cx: 6 + 16*rng.Float64(), cy: 6 + 16*rng.Float64(),
				r: 2 + 3*rng.Float64(), v: 0.5 + 0.5*rng.Float64(),
			})
		}
	}
	gen := func(n int) *Dataset {
		d := &Dataset{X: make([]float32, n*ImageSize), Y: make([]uint8, n), Dim: ImageSize}
		for i := 0; i < n; i++ {
			c := rng.IntN(NumClasses)
			d.Y[i] = uint8(c)
			dx, dy := float64(rng.IntN(5)-2), float64(rng.IntN(5)-2)
			gain := 0.7 + 0.6*rng.Float64()
			img := d.Sample(i)
			for _, b := range templates[c] {
				for y := 0; y < ImageSide; y++ {
					for x := 0; x < ImageSide; x++ {
						ex, ey := float64(x)-b.cx-dx, float64(y)-b.cy-dy
						img[y*ImageSide+x] += float32(gain * b.v * math.Exp(-(ex*ex+ey*ey)/(2*b.r*b.r)))
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
