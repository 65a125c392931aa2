package coordinator

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"
)

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Size = 0 }, "Config.Size"},
		{func(c *Config) { c.Rank = 4 }, "Config.Rank"},
		{func(c *Config) { c.CacheCapacity = -1 }, "Config.CacheCapacity"},
		{func(c *Config) { c.FusionThresholdBytes = -5 }, "Config.FusionThresholdBytes"},
		{func(c *Config) { c.StallWarning = -time.Second }, "Config.StallWarning"},
		{func(c *Config) { c.StallShutdown = time.Second }, "Config.StallShutdown (1s) is shorter"},
		{func(c *Config) { c.MaxStallNamesPerRank = -1 }, "Config.MaxStallNamesPerRank"},
	}
	for _, tc := range cases {
		cfg := DefaultConfig(1, 4)
		tc.mod(&cfg)
		_, err := NewController(cfg)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want ErrInvalid naming %q", err, tc.want)
		}
	}
	if _, err := NewController(DefaultConfig(3, 4)); err != nil {
		t.Errorf("default config: %v", err)
	}
}

func TestAddProcessSetErrors(t *testing.T) {
	c, err := NewController(DefaultConfig(0, 4))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id    int
		ranks []int
	}{{0, []int{1}}, {-1, []int{1}}, {1, nil}, {1, []int{0, 4}}, {1, []int{2, 2}}} {
		if err := c.AddProcessSet(tc.id, tc.ranks); !errors.Is(err, ErrInvalid) {
			t.Errorf("AddProcessSet(%d, %v) = %v, want ErrInvalid", tc.id, tc.ranks, err)
		}
	}
	if err := c.AddProcessSet(1, []int{3, 1}); err != nil {
		t.Fatal(err)
	}
	if got := c.sets[1]; len(got) != 2 || got[0] != 1 || got[1] != 3 {
		t.Errorf("members %v, want sorted [1 3]", got)
	}
	if c.member(1) {
		t.Error("rank 0 is not a member of set 1")
	}
}

// Ranks configured with different fusion thresholds would fuse the same
// cache hits differently: every rank's Cycle fails instead.
func TestSettingsMismatchDetected(t *testing.T) {
	ctrls := newCluster(t, 3, nil)
	cfg := DefaultConfig(2, 3)
	cfg.FusionThresholdBytes = 1 << 20
	c, err := NewController(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctrls[2] = c
	w := &memWorld{n: 3}
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for r := range ctrls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[r] = ctrls[r].Cycle(context.Background(), &memExchange{w: w, rank: r}, time.Unix(0, 0), nil, false)
		}()
	}
	wg.Wait()
	for r, err := range errs {
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "disagree") {
			t.Errorf("rank %d: %v, want a settings mismatch", r, err)
		}
		if _, err2 := ctrls[r].Cycle(context.Background(), &memExchange{w: w, rank: r}, time.Unix(0, 0), nil, false); err2 == nil {
			t.Errorf("rank %d: Cycle after a failed cycle succeeded", r)
		}
	}
}

// failingExchange fails the n-th call.
type failingExchange struct {
	rank, size int
	failAt     int
	calls      int
}

var errLink = errors.New("link down")

func (f *failingExchange) Rank() int { return f.rank }
func (f *failingExchange) Size() int { return f.size }
func (f *failingExchange) step() error {
	f.calls++
	if f.calls == f.failAt {
		return errLink
	}
	return nil
}
func (f *failingExchange) AllreduceBits(ctx context.Context, bits []uint64, op tensor.ReduceOp) error {
	return f.step()
}
func (f *failingExchange) GatherToRoot(ctx context.Context, p []byte) ([][]byte, error) {
	return [][]byte{p}, f.step()
}
func (f *failingExchange) BroadcastFromRoot(ctx context.Context, p []byte) ([]byte, error) {
	return p, f.step()
}

func TestCycleExchangeErrors(t *testing.T) {
	for failAt := 1; failAt <= 3; failAt++ {
		c, err := NewController(DefaultConfig(0, 1))
		if err != nil {
			t.Fatal(err)
		}
		x := &failingExchange{rank: 0, size: 1, failAt: failAt}
		_, err = c.Cycle(context.Background(), x, time.Unix(0, 0), []Request{allreduceReq("a", 4)}, false)
		if !errors.Is(err, errLink) {
			t.Errorf("failAt %d: %v, want the exchange's error", failAt, err)
		}
		if _, err := c.Cycle(context.Background(), x, time.Unix(0, 0), nil, false); err == nil {
			t.Errorf("failAt %d: the controller kept working after a failed cycle", failAt)
		}
	}
	c, _ := NewController(DefaultConfig(0, 2))
	if _, err := c.Cycle(context.Background(), &failingExchange{rank: 1, size: 2}, time.Unix(0, 0), nil, false); !errors.Is(err, ErrInvalid) {
		t.Errorf("exchange of another rank: %v, want ErrInvalid", err)
	}
}

// A world of one works through Cycle alone: slow path, then cached.
func TestSingleRank(t *testing.T) {
	c, err := NewController(DefaultConfig(0, 1))
	if err != nil {
		t.Fatal(err)
	}
	x := &failingExchange{rank: 0, size: 1}
	for i := 0; i < 3; i++ {
		rl, err := c.Cycle(context.Background(), x, time.Unix(0, 0), []Request{allreduceReq("a", 4), allreduceReq("b", 4)}, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(rl.Responses) != 1 || len(rl.Responses[0].Names) != 2 {
			t.Fatalf("cycle %d: %s", i, respString(rl))
		}
	}
	if st := c.Stats(); st.RequestsSent != 2 || st.FastPathCycles != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestParseOpType(t *testing.T) {
	for op := OpAllreduce; op <= OpJoin; op++ {
		got, err := ParseOpType(op.String())
		if err != nil || got != op {
			t.Errorf("ParseOpType(%q) = %v, %v", op.String(), got, err)
		}
	}
	if _, err := ParseOpType("allreduce2"); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown op: %v", err)
	}
	if s := OpType(99).String(); s != "op(99)" {
		t.Errorf("String of unknown op: %q", s)
	}
}

func TestSetFusionThreshold(t *testing.T) {
	c, err := NewController(DefaultConfig(0, 2))
	if err != nil {
		t.Fatal(err)
	}
	before := c.settings
	if err := c.SetFusionThreshold(-1); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative threshold: %v", err)
	}
	if err := c.SetFusionThreshold(1 << 20); err != nil || c.FusionThreshold() != 1<<20 {
		t.Fatalf("SetFusionThreshold: %v, threshold %d", err, c.FusionThreshold())
	}
	if c.settings == before {
		t.Error("the settings hash did not change with the threshold")
	}
}

// A peer whose request list does not decode makes rank 0 fail, and rank 0
// tells every other rank why instead of leaving them waiting.
func TestMalformedRequestListAbortsEveryRank(t *testing.T) {
	ctrls := newCluster(t, 3, nil)
	w := &memWorld{n: 3}
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for r := range ctrls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var x Exchange = &memExchange{w: w, rank: r}
			if r == 2 {
				x = &corruptGather{Exchange: x}
			}
			_, errs[r] = ctrls[r].Cycle(context.Background(), x, time.Unix(0, 0), []Request{allreduceReq("a", 4)}, false)
		}()
	}
	wg.Wait()
	for r, err := range errs {
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("rank %d: %v, want ErrMalformed", r, err)
		}
	}
	if !strings.Contains(errs[1].Error(), "rank 0 gave up") || !strings.Contains(errs[1].Error(), "from rank 2") {
		t.Errorf("rank 1's error does not say what happened: %v", errs[1])
	}
}

// corruptGather sends garbage instead of its request list.
type corruptGather struct{ Exchange }

func (c *corruptGather) GatherToRoot(ctx context.Context, p []byte) ([][]byte, error) {
	return c.Exchange.GatherToRoot(ctx, []byte{wireVersion, 0, 5})
}
