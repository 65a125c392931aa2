package handshake

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/gorovod/gorovod/internal/transport"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (dialer, acceptor net.Conn) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := lis.Accept()
		ch <- res{c, err}
	}()
	d, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { d.Close(); r.c.Close() })
	return d, r.c
}

type result struct {
	peer    int
	purpose Purpose
	err     error
}

// run does one handshake: dialer rank dc.Rank asks for peer with purpose,
// the acceptor with ac expects rank expectRank with expectPurpose.
func run(t *testing.T, dc, ac Config, peer int, purpose Purpose, expectRank int, expectPurpose Purpose) (clientErr error, srv result) {
	t.Helper()
	d, a := tcpPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch := make(chan result, 1)
	go func() {
		p, pu, err := Server(ctx, a, ac, func(r int) (Purpose, bool) { return expectPurpose, r == expectRank })
		if err != nil {
			a.Close() // what a real acceptor does; unblocks a dialer waiting for the verdict
		}
		ch <- result{p, pu, err}
	}()
	clientErr = Client(ctx, d, dc, peer, purpose)
	if clientErr != nil {
		d.Close()
	}
	return clientErr, <-ch
}

func TestHandshakeAccepted(t *testing.T) {
	secret := []byte("s3cret")
	dc := Config{Secret: secret, Epoch: 7, Rank: 1}
	ac := Config{Secret: secret, Epoch: 7, Rank: 3}
	cerr, s := run(t, dc, ac, 3, PurposeShm, 1, PurposeShm)
	if cerr != nil || s.err != nil {
		t.Fatalf("client err %v, server err %v", cerr, s.err)
	}
	if s.peer != 1 || s.purpose != PurposeShm {
		t.Fatalf("server saw peer %d purpose %v, want 1 shm", s.peer, s.purpose)
	}
}

func TestHandshakeRefused(t *testing.T) {
	secret := []byte("s3cret")
	cases := []struct {
		name       string
		dc, ac     Config
		peer       int
		purpose    Purpose
		expectRank int
		expectPur  Purpose
		reason     string // in both errors
	}{
		{"wrong secret", Config{Secret: []byte("other"), Epoch: 1, Rank: 0}, Config{Secret: secret, Epoch: 1, Rank: 1}, 1, PurposeData, 0, PurposeData, "secret"},
		{"wrong epoch", Config{Secret: secret, Epoch: 2, Rank: 0}, Config{Secret: secret, Epoch: 1, Rank: 1}, 1, PurposeData, 0, PurposeData, "epoch"},
		{"wrong target rank", Config{Secret: secret, Epoch: 1, Rank: 0}, Config{Secret: secret, Epoch: 1, Rank: 1}, 2, PurposeData, 0, PurposeData, "rank"},
		{"unexpected dialer", Config{Secret: secret, Epoch: 1, Rank: 5}, Config{Secret: secret, Epoch: 1, Rank: 1}, 1, PurposeData, 0, PurposeData, "rank"},
		{"wrong purpose", Config{Secret: secret, Epoch: 1, Rank: 0}, Config{Secret: secret, Epoch: 1, Rank: 1}, 1, PurposeShm, 0, PurposeData, "purpose"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zap.WarnLevel)
			tc.ac.Logger = zap.New(core)
			cerr, s := run(t, tc.dc, tc.ac, tc.peer, tc.purpose, tc.expectRank, tc.expectPur)
			for side, err := range map[string]error{"dialer": cerr, "acceptor": s.err} {
				if !errors.Is(err, transport.ErrAuth) {
					t.Fatalf("%s: err %v, want ErrAuth", side, err)
				}
				if !strings.Contains(err.Error(), tc.reason) {
					t.Errorf("%s: error %q does not mention %q", side, err, tc.reason)
				}
				var pe *transport.PeerError
				if !errors.As(err, &pe) || pe.Op != "handshake" {
					t.Errorf("%s: error %v is not a handshake PeerError", side, err)
				}
			}
			if logs.FilterMessage("handshake refused").Len() != 1 {
				t.Errorf("acceptor logged %d refusals, want 1", logs.FilterMessage("handshake refused").Len())
			}
		})
	}
}

func TestHandshakeContextDeadline(t *testing.T) {
	d, a := tcpPair(t)
	_ = a // the acceptor never answers
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := Client(ctx, d, Config{Secret: []byte("x"), Rank: 0}, 1, PurposeData)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want DeadlineExceeded", err)
	}
}

func TestHandshakeContextCancel(t *testing.T) {
	d, a := tcpPair(t)
	_ = d // the dialer never speaks
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, err := Server(ctx, a, Config{Secret: []byte("x"), Rank: 1}, func(int) (Purpose, bool) { return PurposeData, true })
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want Canceled", err)
	}
}

func TestHandshakeGarbage(t *testing.T) {
	d, a := tcpPair(t)
	go func() { _, _ = d.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")) }()
	_, _, err := Server(context.Background(), a, Config{Secret: []byte("x"), Rank: 1}, func(int) (Purpose, bool) { return PurposeData, true })
	if !errors.Is(err, transport.ErrMalformed) {
		t.Fatalf("err %v, want ErrMalformed", err)
	}
}

func TestHandshakeTruncated(t *testing.T) {
	d, a := tcpPair(t)
	h := message{Type: typeHello, Epoch: 1, From: 0, To: 1, Purpose: byte(PurposeData)}
	b := h.encode()
	go func() { _, _ = d.Write(b[:len(b)-3]); d.Close() }()
	_, _, err := Server(context.Background(), a, Config{Secret: []byte("x"), Epoch: 1, Rank: 1}, func(int) (Purpose, bool) { return PurposeData, true })
	if !errors.Is(err, transport.ErrPeerLost) {
		t.Fatalf("err %v, want ErrPeerLost", err)
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	msgs := []message{
		{Type: typeHello, Purpose: 2, Epoch: 1<<63 + 5, From: 3, To: 9, Nonce: [32]byte{1, 2, 3}},
		{Type: typeChallenge, Epoch: 4, Rank: 2, Nonce: [32]byte{9}, MAC: [32]byte{31: 7}},
		{Type: typeProof, MAC: [32]byte{0: 1, 31: 2}},
		{Type: typeVerdict, Code: codeAuth, Epoch: 8, Rank: 1},
	}
	for _, m := range msgs {
		got, err := decode(m.encode())
		if err != nil {
			t.Fatalf("type %d: %v", m.Type, err)
		}
		if got != m {
			t.Fatalf("round trip of %+v gave %+v", m, got)
		}
		if _, err := decode(m.encode()[:headerLen+1]); !errors.Is(err, transport.ErrMalformed) {
			t.Fatalf("truncated type %d: err %v, want ErrMalformed", m.Type, err)
		}
	}
}
