// Package fakenccl builds the test double of NCCL and the CUDA runtime
// (csrc/fakenccl.c, csrc/fakecudart.c) with the C compiler, for tests and
// for `make fakenccl`. The double's behaviour and fault switches are
// described at the top of csrc/fakenccl.c and in docs/gpu.md.
//
// The built libraries carry the names the nccl package dlopens
// (libnccl.so.2, libcudart.so.12), so a process whose LD_LIBRARY_PATH
// starts with the output directory loads the double through nccl.Load, the
// same path a real install takes.
package fakenccl

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

//go:embed csrc/*.c
var sources embed.FS

// Library file names the double is built as.
const (
	NCCLName   = "libnccl.so.2"
	CUDARTName = "libcudart.so.12"
)

// ErrNoCompiler: no C compiler to build the double; tests skip on it.
var ErrNoCompiler = errors.New("fakenccl: no C compiler (gcc or $CC) found")

// Options select a variant of the double.
type Options struct {
	// Version is ncclGetVersion's code; 0 means 21803 (2.18.3).
	Version int
	// NoConfig leaves out ncclCommInitRankConfig and ncclGetLastError
	// (NCCL before 2.14: blocking communicators only).
	NoConfig bool
	// Broken leaves out ncclAllReduce (a library the loader must refuse).
	Broken bool
}

// Build compiles the double into dir (created if needed): dir/libcudart.so.12
// and dir/libnccl.so.2, which uses the libcudart next to itself.
func Build(ctx context.Context, dir string, o Options) error {
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	path, err := exec.LookPath(cc)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoCompiler, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("fakenccl: %w", err)
	}
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return fmt.Errorf("fakenccl: %w", err)
	}
	for _, name := range []string{"fakenccl.c", "fakecudart.c"} {
		b, err := sources.ReadFile("csrc/" + name)
		if err != nil {
			return fmt.Errorf("fakenccl: %w", err)
		}
		if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
			return fmt.Errorf("fakenccl: %w", err)
		}
	}
	version := o.Version
	if version == 0 {
		version = 21803
	}
	nccl := []string{"-DFAKE_VERSION=" + strconv.Itoa(version)}
	if !o.NoConfig {
		nccl = append(nccl, "-DFAKE_CONFIG")
	}
	if o.Broken {
		nccl = append(nccl, "-DFAKE_BROKEN")
	}
	// libnccl opens the libcudart next to it at run time (streams must be
	// the same object's); it does not link against it.
	nccl = append(nccl, filepath.Join(src, "fakenccl.c"), "-ldl", "-lpthread", "-lrt")
	steps := []struct {
		out  string
		args []string
	}{
		{CUDARTName, []string{filepath.Join(src, "fakecudart.c"), "-lpthread"}},
		{NCCLName, nccl},
	}
	for _, s := range steps {
		args := append([]string{"-shared", "-fPIC", "-O2", "-Wall", "-o", filepath.Join(dir, s.out), "-Wl,-soname," + s.out}, s.args...)
		cmd := exec.CommandContext(ctx, path, args...)
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("fakenccl: %s %v: %w\n%s", cc, args, err, b)
		}
	}
	return nil
}
