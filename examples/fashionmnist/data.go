package main

import "github.com/gorovod/gorovod/examples/internal/fashion"

// The data set lives in examples/internal/fashion, shared with the CNN example.
type Dataset = fashion.Dataset

const (
	imageSize  = fashion.ImageSize
	numClasses = fashion.NumClasses
)

// DefaultDataDir is where Debian's dataset-fashion-mnist package puts the files.
const DefaultDataDir = fashion.DefaultDataDir

// LoadFashionMNIST reads the training and test sets from dir.
func LoadFashionMNIST(dir string) (train, test *Dataset, err error) { return fashion.Load(dir) }

// Synthetic returns the generated stand-in for Fashion-MNIST.
func Synthetic(nTrain, nTest int, seed uint64) (train, test *Dataset) {
	return fashion.Synthetic(nTrain, nTest, seed)
}
