package coordinator

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata/*.txt scripts")

// TestScripts runs the negotiation scripts in testdata. A script is a list
// of blocks: command lines, a "----" line, the expected output, a blank
// line. Lines starting with # are comments. Commands:
//
//	world n=4 [cache=1024] [fusion=128MiB] [warn=60s] [stall-shutdown=0s] [observer]
//	set id=1 ranks=0,1           register a process set on every rank
//	submit r0 NAME OP DTYPE [SHAPE] [op=sum] [root=0] [device=-1] [pre=1] [post=1] [set=0]
//	                             r* submits on every rank, r0,2 on ranks 0 and 2;
//	                             NAME may contain %d with count=N to submit N tensors
//	cycle [shutdown=r1] [brief]  one lock-step cycle of every rank
//	advance 30s                  move the clock
//	fusion 64KiB                 change the fusion threshold on every rank
//	withdraw r1 NAME [set=0]     take back rank 1's request (prints whether it was in flight)
//	stats r1 | cache r1 | stalls | pending r1 | inflight r1
func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runScript(t, f) })
	}
}

type block struct {
	comments []string
	cmds     []string
	want     []string
}

func parseScript(data string) []block {
	var out []block
	lines := strings.Split(data, "\n")
	for i := 0; i < len(lines); {
		var b block
		for i < len(lines) && (strings.TrimSpace(lines[i]) == "" || strings.HasPrefix(lines[i], "#")) {
			if strings.HasPrefix(lines[i], "#") {
				b.comments = append(b.comments, lines[i])
			}
			i++
		}
		for i < len(lines) && lines[i] != "----" {
			if strings.TrimSpace(lines[i]) != "" {
				b.cmds = append(b.cmds, lines[i])
			}
			i++
		}
		i++ // ----
		for i < len(lines) && lines[i] != "" {
			b.want = append(b.want, lines[i])
			i++
		}
		if len(b.cmds) > 0 || len(b.comments) > 0 {
			out = append(out, b)
		}
	}
	return out
}

func runScript(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blocks := parseScript(string(data))
	s := &scripted{t: t}
	var rewritten strings.Builder
	for bi, b := range blocks {
		var got []string
		for _, cmd := range b.cmds {
			got = append(got, s.run(cmd)...)
		}
		if *rewrite {
			for _, c := range b.comments {
				rewritten.WriteString(c + "\n")
			}
			if len(b.cmds) == 0 {
				rewritten.WriteString("\n")
				continue
			}
			rewritten.WriteString(strings.Join(b.cmds, "\n") + "\n----\n")
			for _, g := range got {
				rewritten.WriteString(g + "\n")
			}
			rewritten.WriteString("\n")
			continue
		}
		if len(b.cmds) > 0 && !slices.Equal(got, b.want) {
			t.Errorf("%s block %d:\n%s\n---- got:\n%s\n---- want:\n%s", path, bi+1,
				strings.Join(b.cmds, "\n"), strings.Join(got, "\n"), strings.Join(b.want, "\n"))
		}
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(rewritten.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// scripted is the state of one script: a world of controllers driven in
// lock-step through the phases of a cycle.
type scripted struct {
	t     *testing.T
	ctrls []*Controller
	reqs  [][]Request
	now   time.Time
	start time.Time
	obs   *recordingObserver
	n     int
}

type recordingObserver struct {
	start  time.Time
	events []string
}

func (o *recordingObserver) OnNegotiateStart(now time.Time, name string, op OpType) {
	o.events = append(o.events, fmt.Sprintf("obs %v: start %s %s", now.Sub(o.start), name, op))
}
func (o *recordingObserver) OnRankReady(now time.Time, name string, rank int) {
	o.events = append(o.events, fmt.Sprintf("obs %v: ready %s r%d", now.Sub(o.start), name, rank))
}
func (o *recordingObserver) OnCycleStart(now time.Time) {
	o.events = append(o.events, fmt.Sprintf("obs %v: cycle", now.Sub(o.start)))
}
func (o *recordingObserver) OnNegotiateEnd(now time.Time, name string) {
	o.events = append(o.events, fmt.Sprintf("obs %v: end %s", now.Sub(o.start), name))
}

func (s *scripted) fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf(format, args...)
}

func (s *scripted) run(line string) []string {
	s.t.Helper()
	f := strings.Fields(line)
	args := map[string]string{}
	var pos []string
	for _, a := range f[1:] {
		if k, v, ok := strings.Cut(a, "="); ok {
			args[k] = v
		} else {
			pos = append(pos, a)
		}
	}
	switch f[0] {
	case "world":
		return s.world(args, pos)
	case "set":
		id, _ := strconv.Atoi(args["id"])
		var ranks []int
		for _, r := range strings.Split(args["ranks"], ",") {
			v, err := strconv.Atoi(r)
			if err != nil {
				s.fatalf("%s: bad ranks", line)
			}
			ranks = append(ranks, v)
		}
		var out []string
		for _, c := range s.ctrls {
			if err := c.AddProcessSet(id, ranks); err != nil {
				out = append(out, "error: "+err.Error())
				break
			}
		}
		return out
	case "submit":
		return s.submit(line, args, pos)
	case "cycle":
		return s.cycle(args, pos)
	case "advance":
		d, err := time.ParseDuration(pos[0])
		if err != nil {
			s.fatalf("%s: %v", line, err)
		}
		s.now = s.now.Add(d)
		return nil
	case "stats":
		st := s.ctrls[s.rank(pos[0])].Stats()
		return []string{fmt.Sprintf("cycles=%d fast=%d slow=%d sent=%d hits=%d misses=%d invalid=%d erased=%d responses=%d fused=%d/%d errors=%d",
			st.Cycles, st.FastPathCycles, st.SlowPathCycles, st.RequestsSent, st.CacheHits, st.CacheMisses,
			st.CacheInvalid, st.CacheErased, st.Responses, st.FusedResponses, st.FusedTensors, st.Errors)}
	case "cache":
		c := s.ctrls[s.rank(pos[0])]
		var out []string
		for bit, e := range c.cache.entries {
			out = append(out, fmt.Sprintf("bit %d: %s", bit, e.resp.String()))
		}
		if len(out) == 0 {
			out = []string{"(empty)"}
		}
		return out
	case "fusion":
		v, err := parseBytes(pos[0])
		if err != nil {
			s.fatalf("%s: %v", line, err)
		}
		for _, c := range s.ctrls {
			if err := c.SetFusionThreshold(v); err != nil {
				return []string{"error: " + err.Error()}
			}
		}
		return nil
	case "inflight":
		return []string{fmt.Sprint(s.ctrls[s.rank(pos[0])].InFlight())}
	case "withdraw":
		set, _ := strconv.Atoi(args["set"])
		if s.ctrls[s.rank(pos[0])].Withdraw(set, pos[1]) {
			return []string{"withdrawn"}
		}
		return []string{"not in flight"}
	case "pending":
		c := s.ctrls[s.rank(pos[0])]
		var out []string
		for _, q := range c.queue {
			out = append(out, "queued "+q.req.Name)
		}
		var sent []string
		for k, q := range c.pending {
			if q.sent {
				sent = append(sent, "sent "+k.name)
			}
		}
		slices.Sort(sent)
		out = append(out, sent...)
		if len(out) == 0 {
			out = []string{"(none)"}
		}
		return out
	case "stalls":
		st := s.ctrls[0].Stalls()
		var out []string
		for _, x := range st {
			out = append(out, fmt.Sprintf("stall %s %s waiting %v submitted %v missing %v", x.Op, x.Name, x.Waiting, x.SubmittedRanks, x.MissingRanks))
		}
		if r := s.ctrls[0].StallReport(); r != "" {
			out = append(out, strings.Split(r, "\n")...)
		}
		if len(out) == 0 {
			out = []string{"(no stalls)"}
		}
		return out
	}
	s.fatalf("unknown command %q", line)
	return nil
}

func (s *scripted) rank(a string) int {
	r, err := strconv.Atoi(strings.TrimPrefix(a, "r"))
	if err != nil || r < 0 || r >= s.n {
		s.fatalf("bad rank %q", a)
	}
	return r
}

func (s *scripted) ranks(a string) []int {
	if a == "r*" {
		out := make([]int, s.n)
		for i := range out {
			out[i] = i
		}
		return out
	}
	var out []int
	for _, p := range strings.Split(strings.TrimPrefix(a, "r"), ",") {
		out = append(out, s.rank(p))
	}
	return out
}

func parseBytes(v string) (int64, error) {
	mult := int64(1)
	for suf, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(v, suf) {
			v, mult = strings.TrimSuffix(v, suf), m
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n * mult, err
}

func (s *scripted) world(args map[string]string, pos []string) []string {
	n, err := strconv.Atoi(args["n"])
	if err != nil {
		s.fatalf("world: bad n")
	}
	s.n = n
	s.start = time.Unix(1_700_000_000, 0)
	s.now = s.start
	s.obs = nil
	if slices.Contains(pos, "observer") {
		s.obs = &recordingObserver{start: s.start}
	}
	s.ctrls = make([]*Controller, n)
	s.reqs = make([][]Request, n)
	for r := range s.ctrls {
		cfg := DefaultConfig(r, n)
		if v, ok := args["cache"]; ok {
			cfg.CacheCapacity, _ = strconv.Atoi(v)
		}
		if v, ok := args["fusion"]; ok {
			if cfg.FusionThresholdBytes, err = parseBytes(v); err != nil {
				s.fatalf("world: fusion: %v", err)
			}
		}
		if v, ok := args["warn"]; ok {
			cfg.StallWarning, _ = time.ParseDuration(v)
		}
		if v, ok := args["stall-shutdown"]; ok {
			cfg.StallShutdown, _ = time.ParseDuration(v)
		}
		if r == 0 && s.obs != nil {
			cfg.Observer = s.obs
		}
		c, err := NewController(cfg)
		if err != nil {
			return []string{"error: " + err.Error()}
		}
		s.ctrls[r] = c
	}
	return nil
}

func (s *scripted) submit(line string, args map[string]string, pos []string) []string {
	if len(pos) < 4 {
		s.fatalf("%s: want submit RANKS NAME OP DTYPE [SHAPE]", line)
	}
	op, err := ParseOpType(pos[2])
	if err != nil {
		s.fatalf("%s: %v", line, err)
	}
	var dt tensor.DType
	if pos[3] != "-" {
		if dt, err = tensor.ParseDType(pos[3]); err != nil {
			s.fatalf("%s: %v", line, err)
		}
	}
	req := Request{Op: op, DType: dt, Device: CPU, Prescale: 1, Postscale: 1, ReduceOp: tensor.Sum}
	if len(pos) > 4 {
		sh := strings.Trim(pos[4], "[]")
		for _, d := range strings.Split(sh, ",") {
			if d == "" {
				continue
			}
			v, err := strconv.ParseInt(d, 10, 64)
			if err != nil {
				s.fatalf("%s: bad shape", line)
			}
			req.Shape = append(req.Shape, v)
		}
	}
	for k, v := range args {
		var err error
		switch k {
		case "op":
			req.ReduceOp, err = tensor.ParseReduceOp(v)
		case "root":
			req.Root, err = strconv.Atoi(v)
		case "device":
			req.Device, err = strconv.Atoi(v)
		case "pre":
			req.Prescale, err = strconv.ParseFloat(v, 64)
		case "post":
			req.Postscale, err = strconv.ParseFloat(v, 64)
		case "set":
			req.ProcessSet, err = strconv.Atoi(v)
		case "count":
		default:
			err = fmt.Errorf("unknown argument")
		}
		if err != nil {
			s.fatalf("%s: %s: %v", line, k, err)
		}
	}
	count := 1
	if v, ok := args["count"]; ok {
		count, _ = strconv.Atoi(v)
	}
	for _, r := range s.ranks(pos[0]) {
		for i := 0; i < count; i++ {
			q := req
			q.Name = pos[1]
			if strings.Contains(q.Name, "%") {
				q.Name = fmt.Sprintf(q.Name, i)
			}
			q.Shape = slices.Clone(req.Shape)
			s.reqs[r] = append(s.reqs[r], q)
		}
	}
	return nil
}

// cycle steps every controller through one cycle in lock-step, combining
// the exchanges in memory, and prints the responses.
func (s *scripted) cycle(args map[string]string, pos []string) []string {
	shutdown := make([]bool, s.n)
	if v, ok := args["shutdown"]; ok {
		for _, r := range s.ranks(v) {
			shutdown[r] = true
		}
	}
	out := lockstep(s.t, s.ctrls, s.now, s.reqs, shutdown)
	s.reqs = make([][]Request, s.n)
	lines := []string{pathOf(s.ctrls[0])}
	if s.obs != nil {
		lines = append(lines, s.obs.events...)
		s.obs.events = nil
	}
	brief := slices.Contains(pos, "brief")
	render := func(rl ResponseList) []string {
		var l []string
		for i := range rl.Responses {
			r := &rl.Responses[i]
			if brief && r.Error == "" {
				l = append(l, fmt.Sprintf("%s %s x%d (%d bytes)", r.Op, r.DType, len(r.Names), r.Bytes()))
			} else {
				l = append(l, r.String())
			}
		}
		if brief {
			l = compressRuns(l)
		}
		if rl.Shutdown {
			l = append(l, "SHUTDOWN")
		}
		if len(l) == 0 {
			l = []string{"(none)"}
		}
		return l
	}
	same := true
	for r := 1; r < s.n; r++ {
		if !slices.Equal(render(out[r]), render(out[0])) {
			same = false
		}
	}
	if same {
		for _, l := range render(out[0]) {
			lines = append(lines, "all: "+l)
		}
		return lines
	}
	for r := range out {
		for _, l := range render(out[r]) {
			lines = append(lines, fmt.Sprintf("r%d: %s", r, l))
		}
	}
	return lines
}

// compressRuns prints a run of identical lines once, with its length.
func compressRuns(in []string) []string {
	var out []string
	for i := 0; i < len(in); {
		j := i
		for j < len(in) && in[j] == in[i] {
			j++
		}
		if j-i > 1 {
			out = append(out, fmt.Sprintf("%s (x%d)", in[i], j-i))
		} else {
			out = append(out, in[i])
		}
		i = j
	}
	return out
}

func pathOf(c *Controller) string {
	if c.lastSlow {
		return "slow path"
	}
	return "fast path"
}

type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// lockstep runs the phases of one cycle on every controller in turn, doing
// the exchanges in memory; it checks that the ranks agree on every
// collective decision.
func lockstep(t fataler, ctrls []*Controller, now time.Time, reqs [][]Request, shutdown []bool) []ResponseList {
	t.Helper()
	n := len(ctrls)
	bits := make([][]uint64, n)
	for r, c := range ctrls {
		bits[r] = c.begin(now, reqs[r], shutdown[r])
	}
	and := slices.Clone(bits[0])
	for _, b := range bits[1:] {
		if len(b) != len(and) {
			t.Fatalf("bit vectors differ in length: %d and %d", len(b), len(and))
		}
		for i := range and {
			and[i] &= b[i]
		}
	}
	inv := make([][]uint64, n)
	for r, c := range ctrls {
		var err error
		inv[r], err = c.afterAnd(slices.Clone(and))
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
		if (inv[r] == nil) != (inv[0] == nil) {
			t.Fatalf("ranks disagree on the invalidation exchange")
		}
	}
	if inv[0] != nil {
		or := slices.Clone(inv[0])
		for _, b := range inv[1:] {
			for i := range or {
				or[i] |= b[i]
			}
		}
		for _, c := range ctrls {
			c.afterOr(slices.Clone(or))
		}
	} else {
		for _, c := range ctrls {
			c.afterOr(nil)
		}
	}
	out := make([]ResponseList, n)
	if !ctrls[0].cur.slow {
		for r, c := range ctrls {
			if c.cur.slow {
				t.Fatalf("rank %d takes the slow path, rank 0 the fast path", r)
			}
			out[r] = c.finish(c.fastPath())
		}
		return out
	}
	payloads := make([][]byte, n)
	for r, c := range ctrls {
		if !c.cur.slow {
			t.Fatalf("rank %d takes the fast path, rank 0 the slow path", r)
		}
		payloads[r] = c.requestPayload()
	}
	rl, err := ctrls[0].coordinate(payloads)
	if err != nil {
		t.Fatalf("coordinate: %v", err)
	}
	enc := AppendResponseList(nil, &rl)
	for r, c := range ctrls {
		if r == 0 {
			out[r] = c.finish(rl)
			continue
		}
		got, err := DecodeResponseList(enc)
		if err != nil {
			t.Fatalf("decode response list: %v", err)
		}
		out[r] = c.finish(got)
	}
	return out
}
