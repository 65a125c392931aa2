//go:build linux

package shm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/gorovod/gorovod/internal/transport"
)

// Available reports whether shared-memory links work on this platform.
func Available() bool { return true }

// ErrUnavailable: the setup exchange completed but shared memory could not
// be set up (no /dev/shm, different /dev/shm namespaces, a bad offer). Both
// sides get it at the same point of the exchange, so the connection can
// still carry a TCP link.
var ErrUnavailable = errors.New("shared memory unavailable")

// Config describes one side of a shared-memory link.
type Config struct {
	Rank     int    // this side's rank
	Peer     int    // the peer's rank
	PeerHost string // for error messages
	Epoch    uint64 // membership epoch, part of the file names
	// JobTag identifies the job in file names ([a-z0-9-], at most 32
	// chars); both sides must use the same. "" = "job".
	JobTag    string
	Slots     int        // slots of the ring this side receives on; 0 = DefaultSlots
	SlotBytes int        // bytes per slot; 0 = DefaultSlotBytes
	Dir       string     // where the (unnamed) ring files are created; "" = /dev/shm
	Wait      WaitPolicy // zero = DefaultWaitPolicy()
	Logger    *zap.Logger
}

func (c *Config) fill() error {
	if c.JobTag == "" {
		c.JobTag = "job"
	}
	if len(c.JobTag) > 32 {
		return fmt.Errorf("shm: job tag %q longer than 32 chars", c.JobTag)
	}
	for _, r := range c.JobTag {
		if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '-') {
			return fmt.Errorf("shm: job tag %q has a character outside [a-z0-9-]", c.JobTag)
		}
	}
	if c.Slots == 0 {
		c.Slots = DefaultSlots
	}
	if c.SlotBytes == 0 {
		c.SlotBytes = DefaultSlotBytes
	}
	if c.Slots < 0 || c.SlotBytes < 0 {
		return fmt.Errorf("shm: %d slots of %d bytes", c.Slots, c.SlotBytes)
	}
	if err := checkGeometry(uint32(c.Slots), uint32(c.SlotBytes)); err != nil {
		return fmt.Errorf("shm: config: %w", err)
	}
	if c.Dir == "" {
		c.Dir = "/dev/shm"
	}
	if c.Wait == (WaitPolicy{}) {
		c.Wait = DefaultWaitPolicy()
	}
	if c.Wait.BlockTimeout <= 0 {
		c.Wait.BlockTimeout = DefaultWaitPolicy().BlockTimeout
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Rank < 0 || c.Peer < 0 || c.Rank == c.Peer {
		return fmt.Errorf("shm: ranks %d and %d", c.Rank, c.Peer)
	}
	return nil
}

// Setup turns conn, an authenticated connection to the peer, into a shared-
// memory link. Both sides call it. Each creates the file of the ring it
// receives on, they swap names over conn, map each other's file, and each
// unlinks its own file as soon as the peer has mapped it: from then on
// nothing is left in Dir whatever happens to either process. The Link owns
// conn (it watches it to notice the peer's death); on error the caller
// still owns conn, and after an error wrapping ErrUnavailable conn is in
// step on both sides and may carry a TCP link instead.
func Setup(ctx context.Context, conn net.Conn, cfg Config) (_ *Link, err error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = &transport.PeerError{Rank: cfg.Peer, Host: cfg.PeerHost, Op: "shm setup", Err: err}
		}
	}()
	release := bindContext(ctx, conn)
	defer func() { err = release(err) }()

	// 1. Create and map the ring this side receives on: an unnamed file
	// (O_TMPFILE) that the peer opens through this process's descriptor
	// table (/proc/PID/fd/FD), so no name is ever left in Dir whatever
	// happens to either process. The offer carries PID and FD after the
	// job/epoch/direction prefix. If creating fails the exchange still
	// runs (with an empty name), so that both sides learn that shared
	// memory is unavailable and can fall back to TCP.
	var rx, tx *ring
	defer func() {
		if err != nil {
			_ = rx.unmap()
			_ = tx.unmap()
		}
	}()
	rxMem, rxFd, createErr := createMapped(cfg.Dir, ringFileSize(cfg.Slots, cfg.SlotBytes))
	myName := ""
	if createErr == nil {
		myName = namePrefix(cfg.JobTag, cfg.Epoch, cfg.Peer, cfg.Rank) + fmt.Sprintf("%08x%08x", uint32(os.Getpid()), uint32(rxFd))
		// The peer has opened it (or given up) once its ack is in.
		defer syscall.Close(rxFd)
	}
	if createErr == nil {
		initHeader(rxMem, cfg.Slots, cfg.SlotBytes)
		rx = newRing(rxMem, cfg.Slots, cfg.SlotBytes)
	}

	// 2. Swap offers.
	off := setupMsg{Type: msgOffer, Offer: offer{Slots: uint32(cfg.Slots), SlotBytes: uint32(cfg.SlotBytes), Name: myName}}
	peerOff, err := swapSetup(conn, off, msgOffer, "an offer")
	if err != nil {
		return nil, err
	}

	// 3. Map the peer's ring, then tell it how that went.
	var mapErr error
	tx, mapErr = mapPeerRing(cfg, createErr, peerOff.Offer)
	ack := setupMsg{Type: msgAck, Status: ackOK}
	if mapErr != nil {
		ack.Status = ackFailed
	}

	// 4. Once the peer has mapped this side's file, the descriptor can go.
	peerAck, err := swapSetup(conn, ack, msgAck, "an ack")
	if err != nil {
		return nil, err
	}
	// Both acks are in: conn is in step on both sides, and a failure on
	// either side is reported as ErrUnavailable on both.
	if mapErr != nil {
		return nil, fmt.Errorf("%w: mapping the peer's ring: %w", ErrUnavailable, mapErr)
	}
	if peerAck.Status != ackOK {
		return nil, fmt.Errorf("%w: the peer could not map this side's ring (see its log)", ErrUnavailable)
	}
	if err := release(nil); err != nil {
		return nil, err
	}
	release = func(err error) error { return err }
	cfg.Logger.Debug("shared-memory link up", zap.Int("peer", cfg.Peer),
		zap.Int("rx_slots", cfg.Slots), zap.Int("rx_slot_bytes", cfg.SlotBytes),
		zap.Int("tx_slots", tx.slots64()), zap.Int("tx_slot_bytes", tx.slotBytes))
	return newLink(conn, cfg.Peer, cfg.PeerHost, tx, rx, cfg.Wait), nil
}

func (r *ring) slots64() int { return int(r.slots) }

// swapSetup sends msg and reads the peer's message of the same step, which
// must be of type want (described as what).
func swapSetup(conn net.Conn, msg setupMsg, want uint8, what string) (setupMsg, error) {
	if _, err := conn.Write(msg.encode()); err != nil {
		return setupMsg{}, ioError(err)
	}
	got, err := readSetup(conn)
	if err != nil {
		return setupMsg{}, ioError(err)
	}
	if got.Type != want {
		return setupMsg{}, fmt.Errorf("%w: shm setup message type %d where %s was expected", transport.ErrMalformed, got.Type, what)
	}
	return got, nil
}

// mapPeerRing decides whether the peer's offered ring can be used and maps
// it: not when this side could not create its own (createErr), the peer
// could not create one, or its geometry, name or header is wrong. A ring
// mapped before a failed check is returned with the error, for the caller
// to unmap.
func mapPeerRing(cfg Config, createErr error, peer offer) (*ring, error) {
	switch {
	case createErr != nil:
		return nil, fmt.Errorf("creating this side's ring: %w", createErr)
	case peer.Name == "":
		return nil, errors.New("the peer could not create its ring (see its log)")
	}
	if err := checkGeometry(peer.Slots, peer.SlotBytes); err != nil {
		return nil, err
	}
	if err := checkName(peer.Name, namePrefix(cfg.JobTag, cfg.Epoch, cfg.Rank, cfg.Peer)); err != nil {
		return nil, err
	}
	slots, slotBytes := int(peer.Slots), int(peer.SlotBytes)
	txMem, err := openMapped(peerRingPath(peer.Name), ringFileSize(slots, slotBytes))
	if err != nil {
		return nil, err
	}
	return newRing(txMem, slots, slotBytes), checkHeader(txMem, slots, slotBytes)
}

// createMapped creates an unnamed file of size bytes in dir (O_TMPFILE:
// it never has a name, so it cannot be left behind) and maps it; the
// descriptor stays open for the peer to open the file through /proc.
func createMapped(dir string, size int) ([]byte, int, error) {
	fd, err := syscall.Open(dir, unix.O_TMPFILE|syscall.O_RDWR|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, -1, &os.PathError{Op: "create in", Path: dir, Err: err}
	}
	// Allocate the pages now: on a full tmpfs (a container's small
	// /dev/shm) this fails here with ENOSPC instead of a SIGBUS at the
	// first write into a sparse page.
	if err := syscall.Fallocate(fd, 0, 0, int64(size)); err != nil {
		if err != syscall.EOPNOTSUPP {
			syscall.Close(fd)
			return nil, -1, &os.PathError{Op: "allocate in", Path: dir, Err: err}
		}
		if err := syscall.Ftruncate(fd, int64(size)); err != nil {
			syscall.Close(fd)
			return nil, -1, &os.PathError{Op: "truncate in", Path: dir, Err: err}
		}
	}
	mem, err := syscall.Mmap(fd, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		syscall.Close(fd)
		return nil, -1, &os.PathError{Op: "mmap in", Path: dir, Err: err}
	}
	return mem, fd, nil
}

// peerRingPath is where the peer's ring is opened: the descriptor its
// offer names (the suffix after the checked prefix is 8 hex digits of
// pid, 8 of fd; checkName has vetted the characters).
func peerRingPath(name string) string {
	suffix := name[len(name)-2*suffixBytes:]
	pid, _ := strconv.ParseUint(suffix[:8], 16, 32)
	fd, _ := strconv.ParseUint(suffix[8:], 16, 32)
	return fmt.Sprintf("/proc/%d/fd/%d", pid, fd)
}

// openMapped maps an existing regular file of exactly size bytes.
func openMapped(path string, size int) ([]byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG || st.Size != int64(size) {
		return nil, fmt.Errorf("%w: %s is not a regular file of %d bytes (mode %o, %d bytes)", transport.ErrMalformed, path, size, st.Mode, st.Size)
	}
	mem, err := syscall.Mmap(fd, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, &os.PathError{Op: "mmap", Path: path, Err: err}
	}
	return mem, nil
}

func ioError(err error) error {
	switch {
	case errors.Is(err, transport.ErrMalformed), errors.Is(err, os.ErrDeadlineExceeded):
		return err
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: connection closed during shm setup", transport.ErrPeerLost)
	}
	return fmt.Errorf("%w: %v", transport.ErrPeerLost, err)
}

// bindContext makes conn's I/O honour ctx during setup; release clears the
// deadline and reports a ctx-caused failure as ctx.Err().
func bindContext(ctx context.Context, conn net.Conn) func(error) error {
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	return func(err error) error {
		if !stop() && ctx.Err() != nil && err == nil {
			err = ctx.Err()
		}
		if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			if cerr := ctxErr(ctx); cerr != nil {
				err = cerr
			}
		}
		_ = conn.SetDeadline(time.Time{})
		return err
	}
}

// ctxErr is ctx.Err(), or DeadlineExceeded once ctx's deadline has passed:
// the connection's copy of the deadline can fire before ctx's own timer.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}
