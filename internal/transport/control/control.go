// Package control is the negotiation's control exchange over a worker's
// data-plane mesh: length-prefixed frames between two ranks, the gather of
// every rank's payload to rank 0 and the broadcast of rank 0's answer. The
// coordinator's Exchange uses it between data-plane ops, on the one
// goroutine that owns the mesh. Pass a tracked mesh (package tracked) so a
// peer lost during negotiation is reported like one lost during an op.
package control

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/gorovod/gorovod/internal/transport"
)

// MaxMessage is the largest frame accepted: a peer announcing more is
// malformed, not a reason to allocate.
const MaxMessage = 64 << 20

// SendFrame sends p with an 8-byte little-endian length prefix.
func SendFrame(ctx context.Context, l transport.Link, p []byte) error {
	var hdr [8]byte
	binary.LittleEndian.PutUint64(hdr[:], uint64(len(p)))
	if err := l.Send(ctx, hdr[:]); err != nil {
		return err
	}
	if len(p) == 0 {
		return nil
	}
	return l.Send(ctx, p)
}

// RecvFrame receives one frame from peer from over l.
func RecvFrame(ctx context.Context, l transport.Link, from int) ([]byte, error) {
	var hdr [8]byte
	if err := l.Recv(ctx, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint64(hdr[:])
	if n > MaxMessage {
		return nil, &transport.PeerError{Rank: from, Op: "recv", Err: fmt.Errorf("%w: control message of %d bytes", transport.ErrMalformed, n)}
	}
	p := make([]byte, n)
	if n == 0 {
		return p, nil
	}
	return p, l.Recv(ctx, p)
}

// GatherToRoot sends payload to rank 0; on rank 0 it returns every rank's
// payload by rank (nil elsewhere).
func GatherToRoot(ctx context.Context, m transport.Mesh, payload []byte) ([][]byte, error) {
	if m.Rank() != 0 {
		return nil, SendFrame(ctx, m.Link(0), payload)
	}
	all := make([][]byte, m.Size())
	all[0] = payload
	for r := 1; r < m.Size(); r++ {
		p, err := RecvFrame(ctx, m.Link(r), r)
		if err != nil {
			return nil, err
		}
		all[r] = p
	}
	return all, nil
}

// BroadcastFromRoot sends rank 0's payload to every rank and returns it
// (every rank's argument but rank 0's is ignored).
func BroadcastFromRoot(ctx context.Context, m transport.Mesh, payload []byte) ([]byte, error) {
	if m.Rank() != 0 {
		return RecvFrame(ctx, m.Link(0), 0)
	}
	for r := 1; r < m.Size(); r++ {
		if err := SendFrame(ctx, m.Link(r), payload); err != nil {
			return nil, err
		}
	}
	return payload, nil
}

// ReduceToRoot combines every rank's payload up a binomial tree rooted at
// rank 0: rank r receives, for each mask below r's lowest set bit, the
// combination of ranks [r+mask, r+2 mask) from rank r+mask and folds it
// into its own by combine(acc, child, r+mask) (acc holds the lower ranks),
// then sends the result to r minus its lowest set bit. Rank 0 returns the
// combination of all ranks; the others nil. Rank 0 receives log2(n)
// messages instead of n-1, and each carries what combine made of a subtree.
func ReduceToRoot(ctx context.Context, m transport.Mesh, payload []byte, combine func(acc, child []byte, from int) []byte) ([]byte, error) {
	rank, size := m.Rank(), m.Size()
	acc := payload
	for mask := 1; mask < size; mask <<= 1 {
		if rank&mask != 0 {
			return nil, SendFrame(ctx, m.Link(rank-mask), acc)
		}
		child := rank + mask
		if child >= size {
			continue
		}
		p, err := RecvFrame(ctx, m.Link(child), child)
		if err != nil {
			return nil, err
		}
		acc = combine(acc, p, child)
	}
	return acc, nil
}

// BroadcastDown sends rank 0's payload down the binomial tree of
// ReduceToRoot and returns it on every rank (every rank's argument but rank
// 0's is ignored): rank 0 sends log2(n) messages instead of n-1.
func BroadcastDown(ctx context.Context, m transport.Mesh, payload []byte) ([]byte, error) {
	rank, size := m.Rank(), m.Size()
	low := 1 // rank's lowest set bit; above every mask for rank 0
	for low < size {
		low <<= 1
	}
	if rank != 0 {
		low = rank & -rank
		p, err := RecvFrame(ctx, m.Link(rank-low), rank-low)
		if err != nil {
			return nil, err
		}
		payload = p
	}
	for mask := low >> 1; mask >= 1; mask >>= 1 {
		if child := rank + mask; child < size {
			if err := SendFrame(ctx, m.Link(child), payload); err != nil {
				return nil, err
			}
		}
	}
	return payload, nil
}
