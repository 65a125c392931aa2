package nccl

import (
	"context"
	"fmt"
)

// BroadcastFunc broadcasts buf in place from rank 0 to every rank of the
// communicator being built, over the CPU control plane (for Gorovod, a
// broadcast on the process set's transport mesh).
type BroadcastFunc func(ctx context.Context, buf []byte) error

// bootstrapLen is the broadcast message: a status byte, then the id. The
// status lets rank 0 tell the others it could not make an id instead of
// leaving them waiting in NewComm.
const bootstrapLen = 1 + len(UniqueID{})

// NewCommBroadcast builds a communicator the way Horovod does: rank 0 makes
// the unique id, bcast hands it to every rank, and all ranks call NewComm.
func (l *Library) NewCommBroadcast(ctx context.Context, nranks, rank, device int, bcast BroadcastFunc, opts ...CommOption) (*Comm, error) {
	if err := l.ready(); err != nil {
		return nil, err
	}
	if bcast == nil {
		return nil, fmt.Errorf("%w: nil BroadcastFunc", ErrInvalid)
	}
	msg := make([]byte, bootstrapLen)
	var idErr error
	if rank == 0 {
		var id UniqueID
		if id, idErr = l.GetUniqueID(); idErr == nil {
			msg[0] = 1
			copy(msg[1:], id[:])
		}
	}
	if err := bcast(ctx, msg); err != nil {
		return nil, fmt.Errorf("nccl: broadcasting the unique id (rank %d of %d): %w", rank, nranks, err)
	}
	if idErr != nil {
		return nil, idErr
	}
	if msg[0] != 1 {
		return nil, fmt.Errorf("%w: rank 0 could not create an NCCL unique id (status %d); see its log", ErrAborted, msg[0])
	}
	var id UniqueID
	copy(id[:], msg[1:])
	return l.NewComm(ctx, nranks, rank, id, device, opts...)
}
