package ops

import (
	"testing"

	"github.com/gorovod/gorovod/internal/transport"
)

// sizerLink records the send buffer asked of it; only the sendBufferSizer
// methods are called.
type sizerLink struct {
	transport.Link
	transport.Duplex
	local bool
	buf   int
	calls int
}

func (l *sizerLink) LocalPeer() bool { return l.local }

func (l *sizerLink) SetSendBuffer(n int) (int, error) {
	prev := l.buf
	l.buf = n
	l.calls++
	return prev, nil
}

// wrapped hides a link behind a decorator, as tracked links do.
type wrapped struct {
	transport.Duplex
	l transport.Link
}

func (w wrapped) Unwrap() transport.Link { return w.l }

func TestNarrowSend(t *testing.T) {
	for _, c := range []struct {
		name   string
		local  bool
		n      int
		narrow bool
	}{
		{"local large", true, duplexSendBufferMin, true},
		{"local small", true, duplexSendBufferMin - 1, false},
		{"remote large", false, 16 << 20, false},
		{"wrapped local large", true, 16 << 20, true},
	} {
		l := &sizerLink{local: c.local, buf: 512 << 10}
		var tx transport.Duplex = l
		if c.name[:7] == "wrapped" {
			tx = wrapped{l: l}
		}
		restore := narrowSend(&duplex{tx: tx, rx: tx}, c.n)
		if got := l.buf == duplexSendBuffer; got != c.narrow {
			t.Errorf("%s: buffer %d during the op, narrowed %v, want %v", c.name, l.buf, got, c.narrow)
		}
		restore()
		if l.buf != 512<<10 {
			t.Errorf("%s: buffer %d after restore, want %d", c.name, l.buf, 512<<10)
		}
		if !c.narrow && l.calls != 0 {
			t.Errorf("%s: %d SetSendBuffer calls, want none", c.name, l.calls)
		}
	}
}
