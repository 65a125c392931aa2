//go:build linux

package shm

import (
	"syscall"
	"time"
)

// WaitPolicy says how a side waits for its peer. The defaults suit ranks
// that outnumber cores: spinning alone starves the very peer being waited
// for, while blocking at once adds tens of microseconds per wake-up.
type WaitPolicy struct {
	// Spins is how many times the counter is polled before yielding.
	Spins int
	// YieldFor is how long the waiter keeps calling sched_yield (giving the
	// core to another process, which runtime.Gosched does not) before it
	// starts sleeping.
	YieldFor time.Duration
	// MaxSleep caps the sleeps that follow (they start at 10 us and double),
	// which bounds how late an idle rank sees new data.
	MaxSleep time.Duration
}

// DefaultWaitPolicy returns the policy used when Config.Wait is zero.
func DefaultWaitPolicy() WaitPolicy {
	return WaitPolicy{Spins: 200, YieldFor: 300 * time.Microsecond, MaxSleep: time.Millisecond}
}

// backoff is the state of one wait; the zero value starts spinning.
type backoff struct {
	n     int
	start time.Time
	sleep time.Duration
}

func (b *backoff) pause(p *WaitPolicy) {
	b.n++
	if b.n <= p.Spins {
		return
	}
	if b.sleep == 0 {
		if b.start.IsZero() {
			b.start = time.Now()
		}
		// Checking the clock every few yields is enough: a yield with no
		// other runnable task costs well under a microsecond.
		if b.n%8 != 0 || time.Since(b.start) < p.YieldFor {
			schedYield()
			return
		}
		b.sleep = 10 * time.Microsecond
	}
	nanosleep(b.sleep)
	b.sleep = min(2*b.sleep, p.MaxSleep)
}

// schedYield gives the core to another runnable thread of any process.
// Syscall (not RawSyscall) lets the Go scheduler hand this P to another
// thread if the yield lasts.
func schedYield() { _, _, _ = syscall.Syscall(syscall.SYS_SCHED_YIELD, 0, 0, 0) }

// nanosleep blocks the thread briefly; unlike time.Sleep it is not rounded
// up to the netpoller's millisecond.
func nanosleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	_ = syscall.Nanosleep(&ts, nil)
}
