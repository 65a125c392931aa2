package mesh

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"

	"go.uber.org/zap"

	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/internal/transport/cma"
	"github.com/gorovod/gorovod/internal/transport/shm"
	"github.com/gorovod/gorovod/internal/transport/tcp"
)

var shmAvailable = shm.Available()

// jobTag names the job in shared-memory file names without revealing the
// secret: every rank of the job derives the same tag.
func jobTag(secret []byte) string {
	h := sha256.Sum256(append([]byte("gorovod shm tag\x00"), secret...))
	return hex.EncodeToString(h[:4])
}

// newShmLink sets up the shared-memory link over conn. When shared memory
// turns out to be unavailable (both sides learn it at the same point), the
// connection carries a TCP link instead.
func newShmLink(ctx context.Context, conn net.Conn, cfg Config, log *zap.Logger, peer int) (transport.Link, error) {
	host := cfg.Peers[peer].Host
	l, err := shm.Setup(ctx, conn, shm.Config{
		Rank: cfg.Rank, Peer: peer, PeerHost: host, Epoch: cfg.Epoch, JobTag: jobTag(cfg.Secret),
		Slots: cfg.ShmSlots, SlotBytes: cfg.ShmSlotBytes, Logger: log,
	})
	if errors.Is(err, shm.ErrUnavailable) {
		log.Warn("shared memory unavailable; using TCP", zap.Int("peer", peer), zap.String("host", host), zap.Error(err))
		return tcp.New(conn, peer, host), nil
	}
	if err != nil {
		return nil, err
	}
	return l, nil
}

// logSingleCopy says in the verbose log, once per mesh with a same-host
// peer, whether the single copy within a host (cross-memory attach, used by
// ops after its own probe between the ranks) can work in this process.
func logSingleCopy(log *zap.Logger, cfg Config) {
	for i, p := range cfg.Peers {
		if i != cfg.Rank && p.Host == cfg.Peers[cfg.Rank].Host {
			ok, detail := cma.Check()
			log.Debug("single copy within the host (cross-memory attach)", zap.Bool("available", ok), zap.String("detail", detail))
			return
		}
	}
}
