//go:build linux

package shm

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/gorovod/gorovod/internal/transport"
)

// Layout of one ring file (one direction). The counters sit on their own
// 128-byte blocks (adjacent-line prefetch pairs lines) so the writer of one
// does not invalidate the other's line.
//
//	0     magic "GRVSHM01" | version u32 | slots u32 | slotBytes u32
//	128   head u64: slots published by the sender
//	256   tail u64: slots consumed by the receiver
//	384   rxSleep u32: 1 while the receiver blocks on rxSeq | rxSeq u32 (futex word)
//	448   txSleep u32: 1 while the sender blocks on txSeq   | txSeq u32 (futex word)
//	512   lens [slots]u32: bytes in each slot, written before head moves
//	4096  slots*slotBytes of data
const (
	ringMagic    = "GRVSHM01"
	ringVersion  = 1
	offHead      = 128
	offTail      = 256
	offRxSleep   = 384
	offRxSeq     = 388
	offTxSleep   = 448
	offTxSeq     = 452
	offLens      = 512
	ringDataOff  = 4096
	ringLensSize = ringDataOff - offLens
)

func ringFileSize(slots, slotBytes int) int { return ringDataOff + slots*slotBytes }

// ring is one direction's mapping. Only the sender moves head and writes
// lens and data; only the receiver moves tail.
type ring struct {
	mem       []byte
	head      *uint64
	tail      *uint64
	rxSleep   *uint32 // see block in wait.go
	rxSeq     *uint32
	txSleep   *uint32
	txSeq     *uint32
	lens      []uint32
	slots     uint64
	slotBytes int
}

func newRing(mem []byte, slots, slotBytes int) *ring {
	return &ring{
		mem:       mem,
		head:      (*uint64)(unsafe.Pointer(&mem[offHead])),
		tail:      (*uint64)(unsafe.Pointer(&mem[offTail])),
		rxSleep:   (*uint32)(unsafe.Pointer(&mem[offRxSleep])),
		rxSeq:     (*uint32)(unsafe.Pointer(&mem[offRxSeq])),
		txSleep:   (*uint32)(unsafe.Pointer(&mem[offTxSleep])),
		txSeq:     (*uint32)(unsafe.Pointer(&mem[offTxSeq])),
		lens:      unsafe.Slice((*uint32)(unsafe.Pointer(&mem[offLens])), slots),
		slots:     uint64(slots),
		slotBytes: slotBytes,
	}
}

// initHeader writes the header of a freshly created (zeroed) ring file.
func initHeader(mem []byte, slots, slotBytes int) {
	copy(mem, ringMagic)
	binary.NativeEndian.PutUint32(mem[8:], ringVersion)
	binary.NativeEndian.PutUint32(mem[12:], uint32(slots))
	binary.NativeEndian.PutUint32(mem[16:], uint32(slotBytes))
}

// checkHeader verifies a mapped peer file against the offer.
func checkHeader(mem []byte, slots, slotBytes int) error {
	if len(mem) != ringFileSize(slots, slotBytes) {
		return fmt.Errorf("%w: shm file of %d bytes, want %d", transport.ErrMalformed, len(mem), ringFileSize(slots, slotBytes))
	}
	if string(mem[:8]) != ringMagic {
		return fmt.Errorf("%w: shm file magic %q, want %q", transport.ErrMalformed, mem[:8], ringMagic)
	}
	v := binary.NativeEndian.Uint32(mem[8:])
	s := binary.NativeEndian.Uint32(mem[12:])
	sb := binary.NativeEndian.Uint32(mem[16:])
	if v != ringVersion || int(s) != slots || int(sb) != slotBytes {
		return fmt.Errorf("%w: shm file header version %d, %d slots of %d bytes; offer said version %d, %d slots of %d bytes",
			transport.ErrMalformed, v, s, sb, ringVersion, slots, slotBytes)
	}
	return nil
}

func (r *ring) loadHead() uint64 { return atomic.LoadUint64(r.head) }
func (r *ring) loadTail() uint64 { return atomic.LoadUint64(r.tail) }

func (r *ring) slot(seq uint64) []byte {
	off := ringDataOff + int(seq%r.slots)*r.slotBytes
	return r.mem[off : off+r.slotBytes : off+r.slotBytes]
}

func (r *ring) unmap() error {
	if r == nil || r.mem == nil {
		return nil
	}
	err := syscall.Munmap(r.mem)
	r.mem = nil
	return err
}
