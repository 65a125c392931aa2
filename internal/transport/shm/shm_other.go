//go:build !linux

package shm

import (
	"context"
	"errors"
	"fmt"
	"net"

	"go.uber.org/zap"

	"github.com/gorovod/gorovod/internal/transport"
)

// Available reports whether shared-memory links work on this platform.
func Available() bool { return false }

// ErrUnavailable: shared memory cannot be set up.
var ErrUnavailable = errors.New("shared memory unavailable")

// Config is unused off Linux.
type Config struct {
	Rank, Peer       int
	PeerHost         string
	Epoch            uint64
	JobTag           string
	Slots, SlotBytes int
	Dir              string
	Logger           *zap.Logger
}

// Setup fails off Linux; callers check Available first.
func Setup(ctx context.Context, conn net.Conn, cfg Config) (transport.Link, error) {
	return nil, fmt.Errorf("%w: shared-memory links need Linux", ErrUnavailable)
}
