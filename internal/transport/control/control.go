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
