package rendezvous

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

func TestControlChannel(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	srv, err := NewControlServer(secret, nil, func(ctx context.Context, method string, req []byte) ([]byte, error) {
		if string(req) == "fail" {
			return nil, errors.New("refused")
		}
		return append([]byte(method+":"), req...), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	defer func() { srv.Stop(); <-done }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := DialControl(lis.Addr().String(), secret)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out, err := c.Call(ctx, "Join", []byte("x"))
	if err != nil || string(out) != "Join:x" {
		t.Fatalf("Call = %q, %v", out, err)
	}
	if _, err := c.Call(ctx, "Heartbeat", []byte("fail")); !errors.Is(err, ErrControl) {
		t.Fatalf("handler error came back as %v", err)
	}
	bad, err := DialControl(lis.Addr().String(), []byte("another secret"))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.Call(ctx, "Join", []byte("x")); !errors.Is(err, ErrAuth) {
		t.Fatalf("wrong secret: %v", err)
	}
}
