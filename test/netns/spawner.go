package netns

import (
	"errors"
	"os/exec"
	"runtime"
)

// errSpawnerClosed is returned when a process is started after Close.
var errSpawnerClosed = errors.New("netns: cluster closed")

// spawner starts processes from one OS thread that lives as long as the
// cluster. PR_SET_PDEATHSIG fires when the forking thread exits, not the
// process, and Go ends a thread whenever a goroutine exits while locked to
// it; forking from an arbitrary thread could thus kill an sshd mid-test.
type spawner struct {
	reqs chan spawnReq
	done chan struct{}
}

type spawnReq struct {
	cmd *exec.Cmd
	err chan error
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnReq), done: make(chan struct{})}
	go s.loop()
	return s
}

func (s *spawner) loop() {
	defer close(s.done)
	// Never unlocked: when the loop ends the thread ends with it, after
	// Close has stopped every child.
	runtime.LockOSThread()
	for r := range s.reqs {
		r.err <- r.cmd.Start()
	}
}

// start runs cmd.Start on the spawner's thread.
func (s *spawner) start(cmd *exec.Cmd) error {
	r := spawnReq{cmd: cmd, err: make(chan error, 1)}
	select {
	case s.reqs <- r:
		return <-r.err
	case <-s.done:
		return errSpawnerClosed
	}
}

// close ends the spawner's goroutine and thread; call once.
func (s *spawner) close() {
	close(s.reqs)
	<-s.done
}
