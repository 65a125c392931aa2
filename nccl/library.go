package nccl

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"
)

// Library names tried by Load, in order. The unversioned names are the
// development symlinks; the versioned ones are what runtime-only installs
// (and the CUDA containers) ship.
var (
	DefaultNCCLNames   = []string{"libnccl.so.2", "libnccl.so"}
	DefaultCUDARTNames = []string{"libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so.10.2"}
)

// Library is a loaded NCCL plus CUDA runtime. A nil *Library is valid: every
// method then returns ErrUnavailable.
type Library struct {
	s       shim
	version Version
}

var loadOnce struct {
	sync.Once
	lib *Library
	err error
}

// Load opens NCCL and the CUDA runtime from the default names, once per
// process; later calls return the same result. The error wraps
// ErrUnavailable and names the library that could not be loaded.
func Load() (*Library, error) {
	loadOnce.Do(func() {
		loadOnce.lib, loadOnce.err = LoadFrom(DefaultNCCLNames, DefaultCUDARTNames)
	})
	return loadOnce.lib, loadOnce.err
}

// LoadFrom opens NCCL from the first of ncclNames and the CUDA runtime from
// the first of cudartNames that dlopen accepts (paths or bare names searched
// the usual way). It is not cached; use it to point at a specific install.
func LoadFrom(ncclNames, cudartNames []string) (*Library, error) {
	if len(ncclNames) == 0 || len(cudartNames) == 0 {
		return nil, fmt.Errorf("%w: no library names given (nccl %d, cudart %d)", ErrUnavailable, len(ncclNames), len(cudartNames))
	}
	s, err := loadShim(ncclNames, cudartNames)
	if err != nil {
		return nil, err
	}
	code, r := s.version()
	if r != Success {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, &CallError{Call: "ncclGetVersion", Result: r, Text: s.errorString(r)})
	}
	return &Library{s: s, version: decodeVersion(code)}, nil
}

func (l *Library) ready() error {
	if l == nil || l.s == nil {
		return fmt.Errorf("%w: library not loaded", ErrUnavailable)
	}
	return nil
}

// Version is the loaded NCCL's version; zeros on a nil Library.
func (l *Library) Version() (major, minor, patch int) {
	if l.ready() != nil {
		return 0, 0, 0
	}
	return l.version.Major, l.version.Minor, l.version.Patch
}

// NCCLVersion is Version as a value.
func (l *Library) NCCLVersion() Version {
	if l.ready() != nil {
		return Version{}
	}
	return l.version
}

// Paths are the files the two libraries were loaded from.
func (l *Library) Paths() (ncclPath, cudartPath string) {
	if l.ready() != nil {
		return "", ""
	}
	return l.s.paths()
}

// RuntimeVersion is cudaRuntimeGetVersion's value (e.g. 12040 for 12.4).
func (l *Library) RuntimeVersion() (int, error) {
	if err := l.ready(); err != nil {
		return 0, err
	}
	v, e := l.s.runtimeVersion()
	if e == -1 {
		return 0, fmt.Errorf("%w: cudaRuntimeGetVersion not in %s", ErrUnsupported, l.cudartPath())
	}
	return v, l.cudaErr("cudaRuntimeGetVersion", e)
}

func (l *Library) cudartPath() string { _, p := l.s.paths(); return p }

// GetUniqueID makes the id rank 0 of a new communicator hands to the others.
func (l *Library) GetUniqueID() (UniqueID, error) {
	var id UniqueID
	if err := l.ready(); err != nil {
		return id, err
	}
	if r := l.s.uniqueID(&id); r != Success {
		return UniqueID{}, l.callErr("ncclGetUniqueId", r, 0)
	}
	return id, nil
}

// DeviceCount is the number of GPUs the CUDA runtime sees.
func (l *Library) DeviceCount() (int, error) {
	if err := l.ready(); err != nil {
		return 0, err
	}
	n, e := l.s.deviceCount()
	return n, l.cudaErr("cudaGetDeviceCount", e)
}

func (l *Library) callErr(call string, r Result, c handle) error {
	return &CallError{Call: call, Result: r, Text: l.s.errorString(r), Detail: l.s.lastError(c)}
}

// cudaErr turns a cudaError_t (or the negated one from the implicit
// cudaSetDevice) into an error; nil for cudaSuccess.
func (l *Library) cudaErr(call string, e int) error {
	if e == 0 {
		return nil
	}
	if e < 0 {
		call, e = "cudaSetDevice", -e
	}
	return &CUDAError{Call: call, Code: e, Text: l.s.cudaErrorString(e)}
}

// Device is one GPU of a Library: memory and stream helpers for tests,
// examples and the collective layer's staging buffers.
type Device struct {
	l       *Library
	Ordinal int
}

// Device returns GPU ordinal's helpers; errors surface on use.
func (l *Library) Device(ordinal int) Device { return Device{l: l, Ordinal: ordinal} }

// Malloc allocates n bytes of device memory (cudaMalloc).
func (d Device) Malloc(n int) (DevicePtr, error) {
	if err := d.l.ready(); err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, fmt.Errorf("%w: Malloc of %d bytes", ErrInvalid, n)
	}
	p, e := d.l.s.malloc(d.Ordinal, n)
	if err := d.l.cudaErr("cudaMalloc", e); err != nil {
		return 0, err
	}
	return p, nil
}

// Free releases memory from Malloc (cudaFree).
func (d Device) Free(p DevicePtr) error {
	if err := d.l.ready(); err != nil {
		return err
	}
	return d.l.cudaErr("cudaFree", d.l.s.free(d.Ordinal, p))
}

// CopyToDevice copies src into device memory at dst (synchronous cudaMemcpy).
func (d Device) CopyToDevice(dst DevicePtr, src []byte) error {
	if err := d.l.ready(); err != nil {
		return err
	}
	return d.l.cudaErr("cudaMemcpy(HostToDevice)", d.l.s.copyToDevice(d.Ordinal, dst, src))
}

// CopyFromDevice copies len(dst) bytes at src into dst (synchronous cudaMemcpy).
func (d Device) CopyFromDevice(dst []byte, src DevicePtr) error {
	if err := d.l.ready(); err != nil {
		return err
	}
	return d.l.cudaErr("cudaMemcpy(DeviceToHost)", d.l.s.copyFromDevice(d.Ordinal, dst, src))
}

// CopyAsync queues a copy of n bytes from src to dst, both device memory,
// on stream s (cudaMemcpyAsync, device to device).
func (d Device) CopyAsync(dst, src DevicePtr, n int, s Stream) error {
	if err := d.l.ready(); err != nil {
		return err
	}
	if n < 0 {
		return fmt.Errorf("%w: CopyAsync of %d bytes", ErrInvalid, n)
	}
	e := d.l.s.copyAsync(d.Ordinal, dst, src, n, s)
	if e == -1 {
		return fmt.Errorf("%w: cudaMemcpyAsync not in %s", ErrUnsupported, d.l.cudartPath())
	}
	return d.l.cudaErr("cudaMemcpyAsync(DeviceToDevice)", e)
}

// NewStream creates a CUDA stream on the device.
func (d Device) NewStream() (Stream, error) {
	if err := d.l.ready(); err != nil {
		return 0, err
	}
	s, e := d.l.s.streamCreate(d.Ordinal)
	if err := d.l.cudaErr("cudaStreamCreate", e); err != nil {
		return 0, err
	}
	return s, nil
}

// DestroyStream destroys a stream from NewStream.
func (d Device) DestroyStream(s Stream) error {
	if err := d.l.ready(); err != nil {
		return err
	}
	return d.l.cudaErr("cudaStreamDestroy", d.l.s.streamDestroy(d.Ordinal, s))
}

// Synchronize waits until the work queued on s is done or ctx ends. It polls
// cudaStreamQuery so that a context can interrupt it (cudaStreamSynchronize
// cannot be interrupted); without cudaStreamQuery it blocks in
// cudaStreamSynchronize. A hung NCCL kernel keeps the stream busy forever:
// callers abort the communicator when this returns ctx's error
// (Comm.Synchronize does).
func (d Device) Synchronize(ctx context.Context, s Stream) error {
	if err := d.l.ready(); err != nil {
		return err
	}
	return pollUntil(ctx, func() (bool, error) {
		e := d.l.s.streamQuery(d.Ordinal, s)
		switch e {
		case 0:
			return true, nil
		case cudaErrorNotReady:
			return false, nil
		case -1:
			return true, d.l.cudaErr("cudaStreamSynchronize", d.l.s.streamSynchronize(d.Ordinal, s))
		}
		return true, d.l.cudaErr("cudaStreamQuery", e)
	})
}

// pollUntil calls poll until it reports done or ctx ends. It first
// re-polls after yielding the processor (GPU work and NCCL enqueues usually
// complete within microseconds, below a timer's resolution), then backs off
// with a timer from 10µs to 1ms so that a stuck peer does not cost a core.
func pollUntil(ctx context.Context, poll func() (bool, error)) error {
	const spins, minWait, maxWait = 50, 10 * time.Microsecond, time.Millisecond
	wait := minWait
	var timer *time.Timer
	for i := 0; ; i++ {
		done, err := poll()
		if done || err != nil {
			if timer != nil {
				timer.Stop()
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if i < spins {
			runtime.Gosched()
			continue
		}
		if timer == nil {
			timer = time.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
		wait = min(2*wait, maxWait)
	}
}
