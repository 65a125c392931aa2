package handshake

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/gorovod/gorovod/internal/transport"
)

// Purpose says what a connection is for; the acceptor refuses a purpose it
// does not expect from that peer.
type Purpose byte

const (
	// PurposeData: the connection carries a TCP data link.
	PurposeData Purpose = 1
	// PurposeShm: the connection sets up a shared-memory link and then stays
	// open beside it so either side notices when the other dies.
	PurposeShm Purpose = 2
)

func (p Purpose) String() string {
	switch p {
	case PurposeData:
		return "data"
	case PurposeShm:
		return "shm"
	}
	return fmt.Sprintf("purpose(%d)", byte(p))
}

// Config is what one rank proves and checks in every handshake.
type Config struct {
	Secret []byte      // the job secret; never sent, only used as the HMAC key
	Epoch  uint64      // membership epoch; both sides must agree
	Rank   int         // this process's rank
	Logger *zap.Logger // refusals are logged at warn; nil: no logging
}

func (c *Config) check() error {
	if len(c.Secret) == 0 {
		return errors.New("handshake: empty job secret")
	}
	if c.Rank < 0 || c.Rank > math.MaxInt32 {
		return fmt.Errorf("handshake: rank %d out of range", c.Rank)
	}
	return nil
}

func (c *Config) logger() *zap.Logger {
	if c.Logger == nil {
		return zap.NewNop()
	}
	return c.Logger
}

// Domain-separation labels: the two MACs can never be swapped for each other.
const (
	labelAcceptor = "gorovod handshake v1 acceptor"
	labelDialer   = "gorovod handshake v1 dialer"
)

// computeMAC is HMAC-SHA256(secret, label | hello | epochA | rankA | nonceA):
// it binds both nonces, both ranks, the epoch and the purpose.
func computeMAC(secret []byte, label string, hello []byte, epochA uint64, rankA uint32, nonceA []byte) [macLen]byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(label))
	h.Write(hello)
	var b [12]byte
	binary.BigEndian.PutUint64(b[:], epochA)
	binary.BigEndian.PutUint32(b[8:], rankA)
	h.Write(b[:])
	h.Write(nonceA)
	var out [macLen]byte
	copy(out[:], h.Sum(nil))
	return out
}

// Client runs the dialer's side on conn: it asks for rank peer with purpose.
// It returns nil once both sides have proven knowledge of the secret and
// agreed on epoch and ranks. Refusals wrap transport.ErrAuth and say why;
// the deadline of ctx bounds the whole exchange.
func Client(ctx context.Context, conn net.Conn, cfg Config, peer int, purpose Purpose) (err error) {
	if err := cfg.check(); err != nil {
		return err
	}
	if peer < 0 || peer > math.MaxInt32 {
		return fmt.Errorf("handshake: peer rank %d out of range", peer)
	}
	defer func() {
		if err != nil {
			err = &transport.PeerError{Rank: peer, Op: "handshake", Err: err}
		}
	}()
	release := bindContext(ctx, conn)
	defer func() { err = release(err) }()

	hello := message{Type: typeHello, Purpose: byte(purpose), Epoch: cfg.Epoch, From: uint32(cfg.Rank), To: uint32(peer)}
	if _, err := rand.Read(hello.Nonce[:]); err != nil {
		return fmt.Errorf("handshake nonce: %w", err)
	}
	helloBytes := hello.encode()
	if _, err := conn.Write(helloBytes); err != nil {
		return ioError(err)
	}
	m, err := readMessage(conn)
	if err != nil {
		return ioError(err)
	}
	switch m.Type {
	case typeVerdict:
		return refusedBy(cfg, peer, m)
	case typeChallenge:
	default:
		return fmt.Errorf("%w: handshake message type %d where a challenge was expected", transport.ErrMalformed, m.Type)
	}
	if m.Epoch != cfg.Epoch || m.Rank != uint32(peer) {
		reason := fmt.Sprintf("acceptor answered as rank %d in epoch %d, want rank %d in epoch %d", m.Rank, m.Epoch, peer, cfg.Epoch)
		cfg.logger().Warn("handshake refused", zap.Int("peer", peer), zap.String("reason", reason))
		return fmt.Errorf("%w: %s", transport.ErrAuth, reason)
	}
	wantA := computeMAC(cfg.Secret, labelAcceptor, helloBytes, m.Epoch, m.Rank, m.Nonce[:])
	proof := message{Type: typeProof, MAC: computeMAC(cfg.Secret, labelDialer, helloBytes, m.Epoch, m.Rank, m.Nonce[:])}
	// The proof is sent even when the acceptor's MAC is wrong, so that the
	// acceptor also finds the mismatch and refuses with a reason.
	if _, err := conn.Write(proof.encode()); err != nil {
		return ioError(err)
	}
	if !hmac.Equal(wantA[:], m.MAC[:]) {
		reason := "acceptor's MAC does not verify: it holds a different job secret"
		cfg.logger().Warn("handshake refused", zap.Int("peer", peer), zap.String("reason", reason))
		return fmt.Errorf("%w: %s", transport.ErrAuth, reason)
	}
	v, err := readMessage(conn)
	if err != nil {
		return ioError(err)
	}
	if v.Type != typeVerdict {
		return fmt.Errorf("%w: handshake message type %d where a verdict was expected", transport.ErrMalformed, v.Type)
	}
	if v.Code != codeOK {
		return refusedBy(cfg, peer, v)
	}
	return nil
}

func refusedBy(cfg Config, peer int, v message) error {
	if v.Code == codeOK {
		return fmt.Errorf("%w: handshake verdict ok where a challenge was expected", transport.ErrMalformed)
	}
	reason := fmt.Sprintf("rank %d refused the connection: %s (it is rank %d in epoch %d; this is rank %d in epoch %d)",
		peer, codeString(v.Code), v.Rank, v.Epoch, cfg.Rank, cfg.Epoch)
	cfg.logger().Warn("handshake refused", zap.Int("peer", peer), zap.String("reason", reason))
	return fmt.Errorf("%w: %s", transport.ErrAuth, reason)
}

// Expect tells Server which peers may connect: the purpose expected from
// rank peer, and false when that rank is not expected at all.
type Expect func(peer int) (Purpose, bool)

// Server runs the acceptor's side on conn and returns the dialer's rank and
// purpose once both sides have proven knowledge of the secret. Refusals wrap
// transport.ErrAuth, are sent to the dialer with a reason code and logged.
func Server(ctx context.Context, conn net.Conn, cfg Config, expect Expect) (peer int, purpose Purpose, err error) {
	if err := cfg.check(); err != nil {
		return -1, 0, err
	}
	peer = -1
	defer func() {
		if err != nil {
			err = &transport.PeerError{Rank: peer, Op: "handshake", Err: err}
		}
	}()
	release := bindContext(ctx, conn)
	defer func() { err = release(err) }()

	hello, err := readMessage(conn)
	if err != nil {
		return peer, 0, ioError(err)
	}
	if hello.Type != typeHello {
		return peer, 0, fmt.Errorf("%w: handshake message type %d where a hello was expected", transport.ErrMalformed, hello.Type)
	}
	if hello.From <= math.MaxInt32 {
		peer = int(hello.From)
	}
	refuse := func(code byte, reason string) error {
		cfg.logger().Warn("handshake refused", zap.Int("peer", peer), zap.String("remote", conn.RemoteAddr().String()), zap.String("reason", reason))
		v := message{Type: typeVerdict, Code: code, Epoch: cfg.Epoch, Rank: uint32(cfg.Rank)}
		_, _ = conn.Write(v.encode()) // best effort: the dialer learns why
		return fmt.Errorf("%w: %s", transport.ErrAuth, reason)
	}
	if hello.Epoch != cfg.Epoch {
		return peer, 0, refuse(codeEpoch, fmt.Sprintf("rank %d dialed in epoch %d, this rank %d is in epoch %d", hello.From, hello.Epoch, cfg.Rank, cfg.Epoch))
	}
	if hello.To != uint32(cfg.Rank) {
		return peer, 0, refuse(codeRank, fmt.Sprintf("rank %d dialed rank %d, this is rank %d", hello.From, hello.To, cfg.Rank))
	}
	want, ok := Purpose(0), false
	if peer >= 0 {
		want, ok = expect(peer)
	}
	if !ok {
		return peer, 0, refuse(codeRank, fmt.Sprintf("rank %d is not expected to connect to rank %d", hello.From, cfg.Rank))
	}
	if Purpose(hello.Purpose) != want {
		return peer, 0, refuse(codePurpose, fmt.Sprintf("rank %d connected for purpose %v, rank %d expects purpose %v", peer, Purpose(hello.Purpose), cfg.Rank, want))
	}
	helloBytes := hello.encode()
	ch := message{Type: typeChallenge, Epoch: cfg.Epoch, Rank: uint32(cfg.Rank)}
	if _, err := rand.Read(ch.Nonce[:]); err != nil {
		return peer, 0, fmt.Errorf("handshake nonce: %w", err)
	}
	ch.MAC = computeMAC(cfg.Secret, labelAcceptor, helloBytes, ch.Epoch, ch.Rank, ch.Nonce[:])
	if _, err := conn.Write(ch.encode()); err != nil {
		return peer, 0, ioError(err)
	}
	proof, err := readMessage(conn)
	if err != nil {
		return peer, 0, ioError(err)
	}
	if proof.Type != typeProof {
		return peer, 0, fmt.Errorf("%w: handshake message type %d where a proof was expected", transport.ErrMalformed, proof.Type)
	}
	wantD := computeMAC(cfg.Secret, labelDialer, helloBytes, ch.Epoch, ch.Rank, ch.Nonce[:])
	if !hmac.Equal(wantD[:], proof.MAC[:]) {
		return peer, 0, refuse(codeAuth, fmt.Sprintf("rank %d's MAC does not verify: it holds a different job secret", peer))
	}
	ok2 := message{Type: typeVerdict, Code: codeOK, Epoch: cfg.Epoch, Rank: uint32(cfg.Rank)}
	if _, err := conn.Write(ok2.encode()); err != nil {
		return peer, 0, ioError(err)
	}
	return peer, Purpose(hello.Purpose), nil
}

// ioError classifies an I/O error of the handshake.
func ioError(err error) error {
	switch {
	case errors.Is(err, transport.ErrMalformed):
		return err
	case errors.Is(err, os.ErrDeadlineExceeded):
		return err // replaced by ctx.Err() in release when ctx caused it
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: connection closed during handshake", transport.ErrPeerLost)
	}
	return fmt.Errorf("%w: %v", transport.ErrPeerLost, err)
}

// bindContext makes conn's I/O honour ctx for the duration of the
// handshake: ctx's deadline becomes the conn deadline and a cancellation
// moves it into the past. The returned release clears the deadline and
// turns deadline errors into ctx errors.
func bindContext(ctx context.Context, conn net.Conn) func(error) error {
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	return func(err error) error {
		if !stop() && ctx.Err() != nil {
			// The callback ran or is running; the conn is unusable for this
			// handshake anyway, and the caller closes it on error.
			if err == nil {
				err = fmt.Errorf("handshake: %w", ctx.Err())
			}
		}
		if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			if cerr := ctxErr(ctx); cerr != nil {
				err = fmt.Errorf("handshake: %w", cerr)
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
