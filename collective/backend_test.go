package collective_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/collectivetest"
	"github.com/gorovod/gorovod/coordinator"
)

// fakeDevice is a device backend that records what it was given and
// "reduces" by writing the group size into every byte.
type fakeDevice struct {
	mu   sync.Mutex
	seen [][]string // names per response
	devs []int
}

func (f *fakeDevice) Execute(_ context.Context, r *coordinator.Response, entries []*collective.Entry, g collective.Group) error {
	f.mu.Lock()
	f.seen = append(f.seen, slices.Clone(r.Names))
	f.devs = append(f.devs, r.Device)
	f.mu.Unlock()
	for _, en := range entries {
		for i := range en.Buf {
			en.Buf[i] = byte(len(g.Members))
		}
	}
	return nil
}

func TestDeviceTensorsGoToTheDeviceBackendAndHostOnesToCPU(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dev := &fakeDevice{}
	err := collectivetest.Run(ctx, 2, func(ctx context.Context, w *collective.World) error {
		in := collective.InWorld(w)
		d := []uint8{9, 9}
		if err := collective.Allreduce(ctx, "on/gpu", d, collective.Sum, in, collective.WithDevice(0)); err != nil {
			return err
		}
		if d[0] != 2 || d[1] != 2 {
			return errors.New("device tensor not written by the device backend")
		}
		h := []uint8{1, 2}
		if err := collective.Allreduce(ctx, "on/cpu", h, collective.Sum, in); err != nil {
			return err
		}
		if h[0] != 2 || h[1] != 4 {
			return errors.New("host tensor not reduced by the CPU backend")
		}
		return nil
	}, collective.WithDeviceBackend(dev))
	if err != nil {
		t.Fatal(err)
	}
	dev.mu.Lock()
	defer dev.mu.Unlock()
	if len(dev.seen) != 2 || dev.seen[0][0] != "on/gpu" || dev.devs[0] != 0 {
		t.Fatalf("device backend saw %v on devices %v, want on/gpu once per rank", dev.seen, dev.devs)
	}
}

func TestDeviceTensorWithoutABackendIsInvalid(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := collectivetest.Run(ctx, 1, func(ctx context.Context, w *collective.World) error {
		return collective.Allreduce(ctx, "x", []float32{1}, collective.Sum, collective.InWorld(w), collective.WithDevice(1))
	})
	if !errors.Is(err, collective.ErrInvalid) {
		t.Fatalf("error %v, want ErrInvalid", err)
	}
}
