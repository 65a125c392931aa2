package coordinator

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"
)

func sampleRequestList() RequestList {
	return RequestList{Shutdown: true, Requests: []Request{
		{Name: "grad/w1", Op: OpAllreduce, DType: tensor.Float32, Shape: []int64{1024, 3}, ReduceOp: tensor.Average,
			Device: CPU, Prescale: 0.5, Postscale: 2, Age: 3 * time.Second},
		{Name: "g", Op: OpAllgather, DType: tensor.Int64, Shape: []int64{0, 7}, Root: 0, Device: 3, ProcessSet: 2},
		{Name: JoinName, Op: OpJoin},
	}}
}

func sampleResponseList() ResponseList {
	return ResponseList{Shutdown: true, Responses: []Response{
		{Op: OpAllreduce, Names: []string{"a", "b"}, DType: tensor.Float16, ReduceOp: tensor.Sum, Device: CPU,
			Prescale: 1, Postscale: math.Inf(1), Counts: []int64{4, 1 << 40}, JoinedRanks: []int{1, 3}},
		{Op: OpAllgather, Names: []string{"g"}, DType: tensor.Uint8, FirstDims: [][]int64{{2, 0, 5}}, RowElems: []int64{6},
			Counts: []int64{42}, ProcessSet: 1},
		{Op: OpBroadcast, Names: []string{"x"}, Root: 2, Error: "mismatched broadcast", ErrorKind: ErrorMismatch},
		{Op: OpJoin, Names: []string{JoinName}, LastJoined: 3},
	}}
}

func TestWireRoundTrip(t *testing.T) {
	rl := sampleRequestList()
	got, err := DecodeRequestList(AppendRequestList(nil, &rl))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, rl) {
		t.Errorf("request list round trip:\n got %+v\nwant %+v", got, rl)
	}
	rl.Withdrawn = []Withdrawal{{ProcessSet: 0, Name: "grad/w"}, {ProcessSet: 2, Name: ""}}
	got, err = DecodeRequestList(AppendRequestList(nil, &rl))
	if err != nil || !reflect.DeepEqual(got, rl) {
		t.Errorf("request list with withdrawals round trip:\n got %+v, %v\nwant %+v", got, err, rl)
	}
	if _, err := DecodeResponseList(AppendRequestList(nil, &rl)[:2]); err == nil {
		t.Error("a response list header with the withdrawals flag was accepted")
	}
	sl := sampleResponseList()
	got2, err := DecodeResponseList(AppendResponseList(nil, &sl))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got2, sl) {
		t.Errorf("response list round trip:\n got %+v\nwant %+v", got2, sl)
	}
}

func TestWireRejects(t *testing.T) {
	rl := sampleRequestList()
	enc := AppendRequestList(nil, &rl)
	cases := map[string][]byte{
		"empty":         nil,
		"version":       append([]byte{9}, enc[1:]...),
		"flags":         append([]byte{enc[0], 0x80}, enc[2:]...),
		"truncated":     enc[:len(enc)-1],
		"trailing":      append(bytes.Clone(enc), 0),
		"huge count":    {wireVersion, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"huge name len": {wireVersion, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x0f},
	}
	for name, b := range cases {
		if _, err := DecodeRequestList(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: DecodeRequestList err = %v, want ErrMalformed", name, err)
		}
		if _, err := DecodeResponseList(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: DecodeResponseList err = %v, want ErrMalformed", name, err)
		}
	}
	// Every strict prefix of a valid message is malformed.
	sl := sampleResponseList()
	renc := AppendResponseList(nil, &sl)
	for i := 0; i < len(renc); i++ {
		if _, err := DecodeResponseList(renc[:i]); err == nil {
			t.Fatalf("prefix of %d/%d bytes decoded", i, len(renc))
		}
	}
}

// FuzzDecodeRequestList: decoding never panics, and whatever decodes
// re-encodes to a message that decodes to the same encoding.
func FuzzDecodeRequestList(f *testing.F) {
	rl := sampleRequestList()
	f.Add(AppendRequestList(nil, &rl))
	f.Add(AppendRequestList(nil, &RequestList{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := DecodeRequestList(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		enc := AppendRequestList(nil, &l)
		l2, err := DecodeRequestList(enc)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if enc2 := AppendRequestList(nil, &l2); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable")
		}
	})
}

// FuzzDecodeResponseList: as FuzzDecodeRequestList, and the accessors of
// what decodes do not panic either.
func FuzzDecodeResponseList(f *testing.F) {
	sl := sampleResponseList()
	f.Add(AppendResponseList(nil, &sl))
	f.Add(AppendResponseList(nil, &ResponseList{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := DecodeResponseList(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		for i := range l.Responses {
			r := &l.Responses[i]
			_ = r.String()
			_ = r.Bytes()
			for j := -1; j <= len(r.Names); j++ {
				_ = r.AllgatherBytes(j)
			}
		}
		enc := AppendResponseList(nil, &l)
		l2, err := DecodeResponseList(enc)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if enc2 := AppendResponseList(nil, &l2); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable")
		}
	})
}

// FuzzCoordinate feeds rank 0 request lists a broken or hostile peer might
// send (any op, dtype, shape, root, set, age): it must answer, never panic,
// and what it answers must encode and decode.
func FuzzCoordinate(f *testing.F) {
	rl := sampleRequestList()
	f.Add(AppendRequestList(nil, &rl))
	bad := RequestList{Requests: []Request{
		{Name: "a", Op: OpAllgather, DType: tensor.Float32, Shape: []int64{-3, 2}},
		{Name: "b", Op: OpBroadcast, DType: tensor.Float32, Shape: []int64{1 << 40, 1 << 40}, Root: -7},
		{Name: "c", Op: OpType(77), DType: tensor.DType(99)},
		{Name: "d", Op: OpAllreduce, DType: tensor.Float32, ProcessSet: 5},
		{Name: "e", Op: OpAlltoall, DType: tensor.Int8, Shape: []int64{}},
	}}
	f.Add(AppendRequestList(nil, &bad))
	f.Fuzz(func(t *testing.T, b []byte) {
		peer, err := DecodeRequestList(b)
		if err != nil {
			return
		}
		cfg := DefaultConfig(0, 3)
		cfg.StallWarning, cfg.StallShutdown = time.Second, 2*time.Second
		c, err := NewController(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.AddProcessSet(1, []int{0, 1}); err != nil {
			t.Fatal(err)
		}
		mine := []Request{allreduceReq("a", 4), {Name: "g", Op: OpAllgather, DType: tensor.Float32, Shape: []int64{2, 2}, Device: CPU}}
		for step := 0; step < 3; step++ {
			now := time.Unix(int64(step), 0)
			bits := c.begin(now, mine, false)
			mine = nil
			inv, err := c.afterAnd(bits)
			if err != nil {
				t.Fatal(err)
			}
			c.afterOr(inv)
			own := c.requestPayload()
			payload := AppendRequestList(nil, &peer)
			out, err := c.coordinate([][]byte{own, payload, payload})
			if err != nil {
				t.Fatal(err)
			}
			enc := AppendResponseList(nil, &out)
			if _, err := DecodeResponseList(enc); err != nil {
				t.Fatalf("rank 0's own response list does not decode: %v", err)
			}
			got := c.finish(out)
			for i := range got.Responses {
				_ = got.Responses[i].String()
			}
		}
	})
}
