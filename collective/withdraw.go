package collective

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/gorovod/gorovod/coordinator"
)

// Per-call cancellation. A call whose context ends before its collective
// starts is withdrawn: the API side asks (entry.withdraw), the loop
// answers at the start of its next cycle (engine.applyWithdrawals), on the
// goroutine that also executes responses, so a call is either withdrawn or
// started, never both. A request the negotiation has not seen is dropped;
// one it has is taken back through coordinator.Controller.Withdraw, which
// tells rank 0 before it counts any later request. Join and the exclusive
// sections (RunExclusive, NewProcessSet) change every rank's negotiation
// and cannot be withdrawn: ending their context fails the world.

// watch withdraws en when ctx ends before en finishes (async calls).
func (en *entry) watch(ctx context.Context) {
	if ctx.Done() == nil {
		return
	}
	en.stopWatch = context.AfterFunc(ctx, func() { en.withdraw(ctx.Err()) })
}

// withdraw asks the loop to withdraw en; cause is why (the context's error).
func (en *entry) withdraw(cause error) {
	e := en.e
	if e == nil {
		return // a call that failed before it was queued
	}
	e.mu.Lock()
	if e.pending[en.req.Name] != en || en.withdrawCause != nil {
		e.mu.Unlock()
		return
	}
	en.withdrawCause = cause
	e.withdrawals = append(e.withdrawals, en)
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// canceledErr is the error of a withdrawn call.
func (e *engine) canceledErr(en *entry) error {
	kind := ErrCanceled
	if errors.Is(en.withdrawCause, context.DeadlineExceeded) {
		return fmt.Errorf("%w (%w): %s %q withdrawn on rank %d before it started; the name may be used again: %w",
			kind, ErrTimeout, en.req.Op, en.req.Name, e.topo.Rank, en.withdrawCause)
	}
	return fmt.Errorf("%w: %s %q withdrawn on rank %d before it started; the name may be used again: %w",
		kind, en.req.Op, en.req.Name, e.topo.Rank, en.withdrawCause)
}

// applyWithdrawals runs on the loop goroutine before a cycle takes the
// queue. It returns an error when a call cannot be withdrawn (the world
// must fail).
func (e *engine) applyWithdrawals() error {
	e.mu.Lock()
	ws := e.withdrawals
	e.withdrawals = nil
	e.mu.Unlock()
	for _, en := range ws {
		name := en.req.Name
		e.mu.Lock()
		if e.pending[name] != en { // it finished meanwhile
			e.mu.Unlock()
			continue
		}
		if i := slices.IndexFunc(e.queue, func(r coordinator.Request) bool { return r.Name == name }); i >= 0 {
			// Not handed to the negotiation yet: nobody else knows of it.
			e.queue = slices.Delete(e.queue, i, i+1)
			e.withdrawnLocked(en)
			e.mu.Unlock()
			en.finish(e.canceledErr(en))
			continue
		}
		e.mu.Unlock()
		if en.exclusive != nil || en.req.Op == coordinator.OpJoin {
			return fmt.Errorf("%w: %s %q cannot be withdrawn once negotiated (it changes every rank's negotiation), and its context ended: %w",
				ErrCanceled, en.req.Op, name, en.withdrawCause)
		}
		if !e.ctrl.Withdraw(en.req.ProcessSet, name) {
			continue // answered: it runs in this cycle's responses
		}
		e.mu.Lock()
		e.withdrawnLocked(en)
		e.mu.Unlock()
		en.finish(e.canceledErr(en))
	}
	return nil
}

// withdrawnLocked forgets en; a barrier's number is handed out again, so
// this rank's barriers stay in step with the others'.
func (e *engine) withdrawnLocked(en *entry) {
	delete(e.pending, en.req.Name)
	if n, ok := strings.CutPrefix(en.req.Name, barrierPrefix); ok && en.req.Op == coordinator.OpBarrier {
		if v, err := strconv.ParseUint(n, 10, 64); err == nil {
			e.freeBarriers = append(e.freeBarriers, v)
		}
	}
}

const barrierPrefix = "barrier/"

// nextBarrierLocked is the number of this rank's next barrier: the lowest
// withdrawn one, else a new one.
func (e *engine) nextBarrierLocked() uint64 {
	if len(e.freeBarriers) > 0 {
		i := slices.Index(e.freeBarriers, slices.Min(e.freeBarriers))
		v := e.freeBarriers[i]
		e.freeBarriers = slices.Delete(e.freeBarriers, i, i+1)
		return v
	}
	e.barriers++
	return e.barriers
}
