package launch

import (
	"context"
	"errors"
	"syscall"
	"testing"
)

type fakeSpawner struct{ got []ProcSpec }

func (f *fakeSpawner) Start(_ context.Context, spec ProcSpec) (Proc, error) {
	f.got = append(f.got, spec)
	return fakeProc{}, nil
}

type fakeProc struct{}

func (fakeProc) Pid() int                    { return 1 }
func (fakeProc) Signal(syscall.Signal) error { return nil }
func (fakeProc) Wait() ExitStatus            { return ExitStatus{} }

func TestHostRouter(t *testing.T) {
	local, remote := &fakeSpawner{}, &fakeSpawner{}
	r := HostRouter{Local: local, Remote: remote}
	for _, h := range []string{"localhost", "127.0.0.1", "::1", "node7.invalid", "192.0.2.1"} {
		if _, err := r.Start(context.Background(), ProcSpec{Host: h}); err != nil {
			t.Fatal(err)
		}
	}
	if len(local.got) != 3 || len(remote.got) != 2 || remote.got[0].Host != "node7.invalid" {
		t.Fatalf("local got %d, remote got %+v", len(local.got), remote.got)
	}
	_, err := HostRouter{Local: local}.Start(context.Background(), ProcSpec{Rank: 3, Host: "node7.invalid"})
	if !errors.Is(err, ErrSpawn) {
		t.Fatalf("remote host without remote spawner: %v", err)
	}
}
