//go:build linux

package shm

import (
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
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
	// SleepFor is how long it then sleeps in short nanosleeps (10 us
	// doubling up to 200 us) before it blocks in the kernel until the peer
	// wakes it (a futex on the counter; the peer pays one system call per
	// publish while it is blocked). Blocking also wakes up every
	// BlockTimeout to check ctx.
	SleepFor     time.Duration
	BlockTimeout time.Duration
}

// DefaultWaitPolicy returns the policy used when Config.Wait is zero.
func DefaultWaitPolicy() WaitPolicy {
	return WaitPolicy{Spins: 200, YieldFor: 300 * time.Microsecond, SleepFor: time.Millisecond, BlockTimeout: 10 * time.Millisecond}
}

const maxNanosleep = 200 * time.Microsecond

// backoff is the state of one wait; the zero value starts spinning.
type backoff struct {
	n     int
	start time.Time
	sleep time.Duration
}

// pause waits a little; it returns true when the caller should block on the
// futex instead.
func (b *backoff) pause(p *WaitPolicy) (block bool) {
	b.n++
	if b.n <= p.Spins {
		if b.n%32 == 0 {
			// The goroutine that makes progress may be another of this
			// process (a Comm's sender and receiver): with one P it
			// cannot run while this one spins.
			runtime.Gosched()
		}
		return false
	}
	if b.start.IsZero() {
		b.start = time.Now()
	}
	if b.sleep == 0 {
		// Checking the clock every few yields is enough: a yield with no
		// other runnable task costs well under a microsecond.
		if b.n%8 != 0 || time.Since(b.start) < p.YieldFor {
			runtime.Gosched()
			schedYield()
			return false
		}
		b.sleep = 10 * time.Microsecond
	}
	if time.Since(b.start) >= p.YieldFor+p.SleepFor {
		return true
	}
	nanosleep(b.sleep)
	b.sleep = min(2*b.sleep, maxNanosleep)
	return false
}

// Blocking protocol. A waiter loads the futex word seq, sets its sleep
// flag, checks once more that it is still stuck (and that the link is not
// closed or lost), then futex-waits while seq is unchanged. Whoever makes
// progress possible (the peer after moving a counter, or this process on
// Close or peer loss) first stores its change, then, if the flag is set,
// increments seq and wakes the word. The flag and counter writes are
// atomic swaps (full barriers on every build, including the race
// detector's, whose plain atomic stores are release-only), so either the
// waiter's re-check sees the change or
// the waker sees the flag, and a wake-up between the re-check and the wait
// shows as a changed seq: none is lost.

// wake wakes a waiter blocked on seq if its flag says there is one.
func wake(seq, flag *uint32) {
	if atomic.LoadUint32(flag) != 0 {
		atomic.AddUint32(seq, 1)
		futexWake(seq)
	}
}

// forceWake wakes a waiter on seq unconditionally (Close, peer loss).
func forceWake(seq *uint32) {
	atomic.AddUint32(seq, 1)
	futexWake(seq)
}

// Shared (not FUTEX_PRIVATE) operations: the word lives in memory mapped
// by two processes.
const (
	futexWaitOp = 0
	futexWakeOp = 1
)

// futexWait returns false if the kernel has no futex support.
func futexWait(word *uint32, expect uint32, timeout time.Duration) bool {
	ts := syscall.NsecToTimespec(int64(timeout))
	_, _, errno := syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(word)), futexWaitOp, uintptr(expect), uintptr(unsafe.Pointer(&ts)), 0, 0)
	return errno != syscall.ENOSYS
}

func futexWake(word *uint32) {
	_, _, _ = syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(word)), futexWakeOp, 1<<30, 0, 0, 0)
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
