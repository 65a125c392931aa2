package elastic

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/collectivetest"
)

// hub is an in-process driver for Run's tests: it forms an epoch once
// every live worker waits in join, over collectivetest's in-memory worlds.
type hub struct {
	t       *testing.T
	mu      sync.Mutex
	changed chan struct{}
	order   []string
	alive   map[string]bool
	waiting map[string]bool
	epoch   uint64
	told    uint64
	assign  map[string]Assignment
	worlds  map[uint64][]*collective.World
	broken  map[uint64]chan struct{}
	sizes   []int
}

func newHub(t *testing.T) *hub {
	return &hub{t: t, changed: make(chan struct{}), alive: map[string]bool{}, waiting: map[string]bool{},
		assign: map[string]Assignment{}, worlds: map[uint64][]*collective.World{}, broken: map[uint64]chan struct{}{}}
}

func (h *hub) bumpLocked() { close(h.changed); h.changed = make(chan struct{}) }

func (h *hub) add(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.order = append(h.order, id)
	h.alive[id] = true
	if h.epoch > 0 {
		h.told = h.epoch + 1 // the others learn at their next commit
	}
	h.bumpLocked()
}

func (h *hub) dead(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.alive[id] = false
	// a dead process's links go away: close its latest world (idempotent)
	if a, ok := h.assign[id]; ok {
		w := h.worlds[a.Epoch][a.Rank]
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = w.Close(ctx)
	}
	h.tryFormLocked()
	h.bumpLocked()
}

func (h *hub) tryFormLocked() {
	var ids []string
	for _, id := range h.order {
		if !h.alive[id] {
			continue
		}
		if !h.waiting[id] {
			return
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, err := collectivetest.NewWorlds(ctx, len(ids))
	if err != nil {
		h.t.Errorf("NewWorlds: %v", err)
		return
	}
	h.epoch++
	h.worlds[h.epoch] = ws
	h.sizes = append(h.sizes, len(ids))
	for r, id := range ids {
		h.assign[id] = Assignment{Epoch: h.epoch, Rank: r, Size: len(ids)}
		delete(h.waiting, id)
	}
}

type hubSession struct {
	h  *hub
	id string
}

func (s hubSession) join(ctx context.Context, after uint64, reason string) (joinReply, error) {
	h := s.h
	h.mu.Lock()
	h.waiting[s.id] = true
	h.tryFormLocked()
	h.bumpLocked()
	for {
		if a, ok := h.assign[s.id]; ok && a.Epoch > after {
			h.mu.Unlock()
			return joinReply{Status: joinAssigned, Assign: a}, nil
		}
		ch := h.changed
		h.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return joinReply{}, ctx.Err()
		}
		h.mu.Lock()
	}
}

func (s hubSession) told() uint64 {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	return s.h.told
}

func (s hubSession) broken(epoch uint64) <-chan struct{} {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	c, ok := s.h.broken[epoch]
	if !ok {
		c = make(chan struct{})
		s.h.broken[epoch] = c
	}
	return c
}

func (s hubSession) progress(uint64, int64) {}

// the two-parameter "model" every rank trains: each step adds the average
// of the same contributions, so the result does not depend on the sizes.
type trainer struct {
	w     []float64
	st    *State
	steps int64
	log   []string // "c5" committed step 5, "s7" started at synced step 7
	sizes []int
}

func newTrainer(steps int64) *trainer {
	tr := &trainer{w: make([]float64, 2), steps: steps}
	tr.st = NewState(Float64s("w", tr.w))
	tr.st.OnReset(func(ctx context.Context, w *collective.World) error {
		tr.sizes = append(tr.sizes, w.Size())
		return nil
	})
	return tr
}

func (tr *trainer) fn(ctx context.Context, w *collective.World) error {
	tr.log = append(tr.log, fmt.Sprintf("s%d", tr.st.Step()))
	for tr.st.Step() < tr.steps {
		next := tr.st.Step() + 1
		g := []float64{float64(next), 1}
		if err := collective.Allreduce(ctx, "grad", g, collective.Average, collective.InWorld(w)); err != nil {
			return err
		}
		for i := range tr.w {
			tr.w[i] += g[i]
		}
		if err := tr.st.Commit(ctx); err != nil {
			if errors.Is(err, collective.ErrHostsUpdated) {
				tr.log = append(tr.log, fmt.Sprintf("c%d", tr.st.Step()), fmt.Sprintf("u%d", tr.st.Step()))
			}
			return err
		}
		tr.log = append(tr.log, fmt.Sprintf("c%d", tr.st.Step()))
	}
	return nil
}

// checkLog: the committed steps 1..n each once, counting steps adopted
// through a sync ("s" entries above the last commit).
func (tr *trainer) checkLog(t *testing.T, name string) {
	t.Helper()
	var got []int64
	last := int64(0)
	for _, e := range tr.log {
		var n int64
		fmt.Sscanf(e[1:], "%d", &n)
		switch e[0] {
		case 'c':
			got = append(got, n)
			last = n
		case 's':
			if n < last {
				t.Fatalf("%s: restarted at step %d below its last commit %d (log %v)", name, n, last, tr.log)
			}
			for s := last + 1; s <= n; s++ {
				got = append(got, s)
			}
			last = n
		}
	}
	for i, s := range got {
		if s != int64(i+1) {
			t.Fatalf("%s: committed steps %v are not 1..%d once each (log %v)", name, got, tr.steps, tr.log)
		}
	}
	if int64(len(got)) != tr.steps {
		t.Fatalf("%s: committed %d steps, want %d (log %v)", name, len(got), tr.steps, tr.log)
	}
}

func want(steps int64) []float64 { return []float64{float64(steps * (steps + 1) / 2), float64(steps)} }

type faultSpec struct {
	id, point string
	step      int64
}

// runJob runs ids through Run on h; workers with a fault die (their Run
// returns errKilled) at it. It returns the trainers and Run's errors.
func runJob(ctx context.Context, t *testing.T, h *hub, ids []string, steps int64, faults []faultSpec, limit int) (map[string]*trainer, map[string]error) {
	trs, errs := map[string]*trainer{}, map[string]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, id := range ids { // all known before any joins: the first epoch has them all
		h.add(id)
	}
	for _, id := range ids {
		tr := newTrainer(steps)
		trs[id] = tr
		r := &runner{sess: hubSession{h, id}, resetLimit: limit, closeTimeout: time.Second, joinTimeout: 10 * time.Second,
			newWorld: func(ctx context.Context, a Assignment) (*collective.World, error) {
				h.mu.Lock()
				defer h.mu.Unlock()
				return h.worlds[a.Epoch][a.Rank], nil
			},
			fault: func(point string, step int64) error {
				for _, f := range faults {
					if f.id == id && f.point == point && f.step == step {
						return fmt.Errorf("%w: %s at %s, step %d", errKilled, id, point, step)
					}
				}
				return nil
			}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := r.run(ctx, tr.st, tr.fn)
			h.dead(id) // gone, whether it failed or finished
			mu.Lock()
			errs[id] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	return trs, errs
}

// noLeaks fails the test when goroutines started after base are still
// running once the wait (bounded) ends: a world's loop or a watcher left
// behind.
func noLeaks(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left (before: %d):\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond) // polling for goroutines to end, bounded above
	}
}

func TestRunNoFailure(t *testing.T) {
	defer noLeaks(t, runtime.NumGoroutine())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := newHub(t)
	trs, errs := runJob(ctx, t, h, []string{"a", "b", "c"}, 5, nil, 0)
	for id, tr := range trs {
		if errs[id] != nil || !slices.Equal(tr.w, want(5)) {
			t.Fatalf("%s: err %v, w %v", id, errs[id], tr.w)
		}
		tr.checkLog(t, id)
	}
}

// A worker dies in the commit vote at step 4; a second one dies at each
// recovery step of the reset that follows. The others converge on the
// highest committed step and finish with identical parameters.
func TestRunFailuresAtEveryRecoveryStep(t *testing.T) {
	for _, point := range []string{"join", "reset", "sync", "broadcast", "vote"} {
		t.Run(point, func(t *testing.T) {
			defer noLeaks(t, runtime.NumGoroutine())
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			h := newHub(t)
			faults := []faultSpec{{"b", "vote", 3}, {"c", point, 3}}
			trs, errs := runJob(ctx, t, h, []string{"a", "b", "c", "d"}, 8, faults, 0)
			for _, id := range []string{"b", "c"} {
				if !errors.Is(errs[id], errKilled) {
					t.Fatalf("%s: Run returned %v, want killed", id, errs[id])
				}
			}
			for _, id := range []string{"a", "d"} {
				if errs[id] != nil || !slices.Equal(trs[id].w, want(8)) {
					t.Fatalf("%s: err %v, w %v, want %v", id, errs[id], trs[id].w, want(8))
				}
				trs[id].checkLog(t, id)
			}
			if last := h.sizes[len(h.sizes)-1]; last != 2 {
				t.Fatalf("epoch sizes %v: the last world should have the 2 survivors", h.sizes)
			}
		})
	}
}

func TestRunGrowsAtTheSameStep(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h := newHub(t)
	var once sync.Once
	var late *trainer
	var lateErr error
	var wg sync.WaitGroup
	faults := []faultSpec{}
	_ = faults
	// a and b train; when a commits step 3, worker n is added
	trs := map[string]*trainer{}
	errs := map[string]error{}
	var mu sync.Mutex
	h.add("a")
	h.add("b")
	for _, id := range []string{"a", "b"} {
		tr := newTrainer(10)
		trs[id] = tr
		r := &runner{sess: hubSession{h, id}, closeTimeout: time.Second, joinTimeout: 10 * time.Second,
			newWorld: func(ctx context.Context, a Assignment) (*collective.World, error) {
				h.mu.Lock()
				defer h.mu.Unlock()
				return h.worlds[a.Epoch][a.Rank], nil
			},
			fault: func(point string, step int64) error {
				if id == "a" && point == "vote" && step == 3 {
					once.Do(func() {
						late = newTrainer(10)
						h.add("n")
						rn := &runner{sess: hubSession{h, "n"}, closeTimeout: time.Second, joinTimeout: 10 * time.Second,
							newWorld: func(ctx context.Context, a Assignment) (*collective.World, error) {
								h.mu.Lock()
								defer h.mu.Unlock()
								return h.worlds[a.Epoch][a.Rank], nil
							}}
						wg.Add(1)
						go func() { defer wg.Done(); lateErr = rn.run(ctx, late.st, late.fn) }()
					})
				}
				return nil
			}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := r.run(ctx, tr.st, tr.fn)
			mu.Lock()
			errs[id] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	if lateErr != nil || !slices.Equal(late.w, want(10)) {
		t.Fatalf("late worker: %v, w %v", lateErr, late.w)
	}
	var updatedAt []string
	for id, tr := range trs {
		if errs[id] != nil || !slices.Equal(tr.w, want(10)) {
			t.Fatalf("%s: %v, w %v", id, errs[id], tr.w)
		}
		tr.checkLog(t, id)
		for _, e := range tr.log {
			if e[0] == 'u' {
				updatedAt = append(updatedAt, e)
			}
		}
	}
	if len(updatedAt) != 2 || updatedAt[0] != updatedAt[1] {
		t.Fatalf("ErrHostsUpdated seen at %v; want once per rank at the same step", updatedAt)
	}
	if late.log[0] != "s"+updatedAt[0][1:] {
		t.Fatalf("the late worker started at %s, want the others' step %s", late.log[0], updatedAt[0][1:])
	}
	if !slices.Equal(h.sizes, []int{2, 3}) {
		t.Fatalf("world sizes %v, want [2 3]", h.sizes)
	}
}

func TestRunResetLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h := newHub(t)
	faults := []faultSpec{{"b", "vote", 2}, {"c", "vote", 4}}
	_, errs := runJob(ctx, t, h, []string{"a", "b", "c"}, 8, faults, 1)
	if !errors.Is(errs["a"], ErrResetLimit) {
		t.Fatalf("a: %v, want ErrResetLimit", errs["a"])
	}
}
