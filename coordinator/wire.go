package coordinator

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"
)

// The whole wire format of negotiation lives in this file. Both messages
// start with a version byte (or, from rank 0, abortMarker and a reason) and
// a flags byte; integers are (u)varints,
// floats are 8 little-endian bytes, strings and lists are length-prefixed.
// A Request's Rank is not sent: rank 0 knows who sent each payload.
//
//	RequestList  = version flags(bit0 shutdown) uvarint(n) Request*n
//	Request      = string(name) u8(op) u8(dtype) u8(reduceop) uvarint(ndims) varint*ndims
//	               varint(root) varint(device) f64(prescale) f64(postscale) varint(set)
//	               varint(age ns)
//	Merged       = version flags(bit0 shutdown, bit1 withdrawals, bit2 merged, bit3 failure)
//	               failure: string(reason)
//	               else: uvarint(n) (Request ranks)*n [uvarint(m) (varint(set) string(name) ranks)*m]
//	ranks        = uvarint(k) (uvarint(first) uvarint(count))*k, ascending, disjoint
//	ResponseList = version flags(bit0 shutdown) uvarint(n) Response*n
//	Response     = u8(op) u8(dtype) u8(reduceop) varint(root) varint(device) f64(prescale)
//	               f64(postscale) varint(set) strings(names) varints(counts)
//	               uvarint(n) varints*n (firstdims) varints(rowelems) varints(joined)
//	               varint(lastjoined) u8(errorkind) string(error)
const wireVersion = 1

// abortMarker replaces the version byte of the response broadcast when rank
// 0 cannot go on (a peer's request list did not decode): the rest is the
// reason, so every rank fails with it instead of waiting.
const abortMarker = 0xff

func appendAbort(dst []byte, err error) []byte {
	return append(append(dst, abortMarker), err.Error()...)
}

// decodeAbort returns the error an abort message carries, or nil.
func decodeAbort(b []byte) error {
	if len(b) == 0 || b[0] != abortMarker {
		return nil
	}
	const maxReason = 1 << 10
	reason := b[1:]
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	return fmt.Errorf("%w: rank 0 gave up negotiating: %q", ErrMalformed, reason)
}

const (
	flagShutdown    = 1
	flagWithdrawals = 2 // request lists only: withdrawals follow the requests
	flagMerged      = 4 // merged request lists (of a subtree of ranks) only
	flagFailure     = 8 // merged: a list in the subtree did not decode
)

// RequestList is what one rank sends rank 0 on the slow path.
type RequestList struct {
	Requests []Request
	Shutdown bool
	// Withdrawn are requests this rank sent earlier and takes back (see
	// Controller.Withdraw); rank 0 applies them before Requests.
	Withdrawn []Withdrawal
}

// Withdrawal names a request a rank takes back.
type Withdrawal struct {
	ProcessSet int
	Name       string
}

// AppendRequestList appends the encoding of l to dst.
func AppendRequestList(dst []byte, l *RequestList) []byte {
	f := flags(l.Shutdown)
	if len(l.Withdrawn) > 0 {
		f |= flagWithdrawals
	}
	dst = append(dst, wireVersion, f)
	dst = binary.AppendUvarint(dst, uint64(len(l.Requests)))
	for i := range l.Requests {
		dst = appendRequest(dst, &l.Requests[i])
	}
	if len(l.Withdrawn) > 0 {
		dst = binary.AppendUvarint(dst, uint64(len(l.Withdrawn)))
		for _, w := range l.Withdrawn {
			dst = binary.AppendVarint(dst, int64(w.ProcessSet))
			dst = appendString(dst, w.Name)
		}
	}
	return dst
}

// DecodeRequestList decodes a RequestList; it never panics and rejects
// trailing bytes.
func DecodeRequestList(b []byte) (RequestList, error) {
	d := decoder{b: b}
	var l RequestList
	f := d.header(flagShutdown | flagWithdrawals)
	l.Shutdown = f&flagShutdown != 0
	n := d.count()
	if n > 0 {
		l.Requests = make([]Request, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		d.request(&l.Requests[i])
	}
	if f&flagWithdrawals != 0 {
		n := d.count()
		if n > 0 {
			l.Withdrawn = make([]Withdrawal, n)
		}
		for i := 0; i < n && d.err == nil; i++ {
			l.Withdrawn[i] = Withdrawal{ProcessSet: d.int(), Name: d.string()}
		}
	}
	if err := d.finish("request list"); err != nil {
		return RequestList{}, err
	}
	return l, nil
}

func appendRequest(dst []byte, r *Request) []byte {
	dst = appendString(dst, r.Name)
	dst = append(dst, byte(r.Op), byte(r.DType), byte(r.ReduceOp))
	dst = binary.AppendUvarint(dst, uint64(len(r.Shape)))
	for _, d := range r.Shape {
		dst = binary.AppendVarint(dst, d)
	}
	dst = binary.AppendVarint(dst, int64(r.Root))
	dst = binary.AppendVarint(dst, int64(r.Device))
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(r.Prescale))
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(r.Postscale))
	dst = binary.AppendVarint(dst, int64(r.ProcessSet))
	return binary.AppendVarint(dst, int64(r.Age))
}

func (d *decoder) request(r *Request) {
	r.Name = d.string()
	r.Op = OpType(d.u8())
	r.DType = tensor.DType(d.u8())
	r.ReduceOp = tensor.ReduceOp(d.u8())
	r.Shape = d.varints()
	r.Root = d.int()
	r.Device = d.int()
	r.Prescale = d.f64()
	r.Postscale = d.f64()
	r.ProcessSet = d.int()
	r.Age = time.Duration(d.varint())
}

// AppendResponseList appends the encoding of l to dst.
func AppendResponseList(dst []byte, l *ResponseList) []byte {
	dst = append(dst, wireVersion, flags(l.Shutdown))
	dst = binary.AppendUvarint(dst, uint64(len(l.Responses)))
	for i := range l.Responses {
		r := &l.Responses[i]
		dst = append(dst, byte(r.Op), byte(r.DType), byte(r.ReduceOp))
		dst = binary.AppendVarint(dst, int64(r.Root))
		dst = binary.AppendVarint(dst, int64(r.Device))
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(r.Prescale))
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(r.Postscale))
		dst = binary.AppendVarint(dst, int64(r.ProcessSet))
		dst = binary.AppendUvarint(dst, uint64(len(r.Names)))
		for _, n := range r.Names {
			dst = appendString(dst, n)
		}
		dst = appendVarints(dst, r.Counts)
		dst = binary.AppendUvarint(dst, uint64(len(r.FirstDims)))
		for _, fd := range r.FirstDims {
			dst = appendVarints(dst, fd)
		}
		dst = appendVarints(dst, r.RowElems)
		dst = binary.AppendUvarint(dst, uint64(len(r.JoinedRanks)))
		for _, j := range r.JoinedRanks {
			dst = binary.AppendVarint(dst, int64(j))
		}
		dst = binary.AppendVarint(dst, int64(r.LastJoined))
		dst = append(dst, byte(r.ErrorKind))
		dst = appendString(dst, r.Error)
	}
	return dst
}

// DecodeResponseList decodes a ResponseList; it never panics and rejects
// trailing bytes.
func DecodeResponseList(b []byte) (ResponseList, error) {
	d := decoder{b: b}
	var l ResponseList
	l.Shutdown = d.header(flagShutdown)&flagShutdown != 0
	n := d.count()
	if n > 0 {
		l.Responses = make([]Response, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		r := &l.Responses[i]
		r.Op = OpType(d.u8())
		r.DType = tensor.DType(d.u8())
		r.ReduceOp = tensor.ReduceOp(d.u8())
		r.Root = d.int()
		r.Device = d.int()
		r.Prescale = d.f64()
		r.Postscale = d.f64()
		r.ProcessSet = d.int()
		if k := d.count(); k > 0 {
			r.Names = make([]string, k)
			for j := range r.Names {
				r.Names[j] = d.string()
			}
		}
		r.Counts = d.varints()
		if k := d.count(); k > 0 {
			r.FirstDims = make([][]int64, k)
			for j := range r.FirstDims {
				r.FirstDims[j] = d.varints()
			}
		}
		r.RowElems = d.varints()
		if k := d.count(); k > 0 {
			r.JoinedRanks = make([]int, k)
			for j := range r.JoinedRanks {
				r.JoinedRanks[j] = d.int()
			}
		}
		r.LastJoined = d.int()
		r.ErrorKind = ErrorKind(d.u8())
		r.Error = d.string()
	}
	if err := d.finish("response list"); err != nil {
		return ResponseList{}, err
	}
	return l, nil
}

func flags(shutdown bool) byte {
	if shutdown {
		return flagShutdown
	}
	return 0
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendVarints(dst []byte, v []int64) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(v)))
	for _, x := range v {
		dst = binary.AppendVarint(dst, x)
	}
	return dst
}

// decoder reads the wire format; the first error sticks and every later
// read returns a zero value, so decoding code stays linear.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s at byte %d of %d", ErrMalformed, what, d.off, len(d.b))
	}
}

// header reads the version and the flags, allowing only those in allowed.
func (d *decoder) header(allowed byte) byte {
	v, f := d.u8(), d.u8()
	if d.err != nil {
		return 0
	}
	if v != wireVersion {
		d.err = fmt.Errorf("%w: wire version %d, want %d", ErrMalformed, v, wireVersion)
		return 0
	}
	if f&^allowed != 0 {
		d.fail("flags")
		return 0
	}
	return f
}

func (d *decoder) u8() byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail("byte")
		return 0
	}
	v := d.b[d.off]
	d.off++
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail("uvarint")
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.off += n
	return v
}

// int reads a varint that must fit in 32 bits (ranks, roots, devices, set ids).
func (d *decoder) int() int {
	v := d.varint()
	if v < math.MinInt32 || v > math.MaxInt32 {
		d.fail("small integer")
		return 0
	}
	return int(v)
}

// count reads a list length; every element takes at least one byte, so a
// length beyond the remaining bytes is malformed (and never allocated).
func (d *decoder) count() int {
	v := d.uvarint()
	if d.err == nil && v > uint64(len(d.b)-d.off) {
		d.fail("length")
		return 0
	}
	return int(v)
}

func (d *decoder) string() string {
	n := d.count()
	if d.err != nil || n == 0 {
		return ""
	}
	s := string(d.b[d.off : d.off+n])
	d.off += n
	return s
}

func (d *decoder) f64() float64 {
	if d.err != nil {
		return 0
	}
	if len(d.b)-d.off < 8 {
		d.fail("float")
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(d.b[d.off:]))
	d.off += 8
	return v
}

func (d *decoder) varints() []int64 {
	n := d.count()
	if d.err != nil || n == 0 {
		return nil
	}
	out := make([]int64, n)
	for i := range out {
		out[i] = d.varint()
	}
	return out
}

func (d *decoder) finish(what string) error {
	if d.err == nil && d.off != len(d.b) {
		d.err = fmt.Errorf("%w: %d trailing bytes after %s", ErrMalformed, len(d.b)-d.off, what)
	}
	return d.err
}
