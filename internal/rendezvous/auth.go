package rendezvous

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// Request signing. The client puts three metadata entries on every call:
//
//	gorovod-ts     unix nanoseconds at signing
//	gorovod-nonce  16 random bytes, hex
//	gorovod-mac    hex HMAC-SHA256(secret, "req" | method | ts | nonce | request bytes)
//
// The server refuses a call whose MAC does not verify, whose timestamp is
// more than maxClockSkew away from its clock, or whose nonce it has seen
// (replay). It signs its answer the same way, bound to the request's nonce,
// in the gorovod-resp-mac header, so a worker cannot be fed a world by
// something that does not hold the secret either. Request bytes are the
// deterministic protobuf encoding of the message.
const (
	mdTS      = "gorovod-ts"
	mdNonce   = "gorovod-nonce"
	mdMAC     = "gorovod-mac"
	mdRespMAC = "gorovod-resp-mac"

	defaultMaxClockSkew = 5 * time.Minute
)

func mac(secret []byte, dir, method, ts, nonce string, msg any) ([]byte, error) {
	var body []byte
	if m, ok := msg.(proto.Message); ok {
		var err error
		if body, err = (proto.MarshalOptions{Deterministic: true}).Marshal(m); err != nil {
			return nil, err
		}
	}
	h := hmac.New(sha256.New, secret)
	for _, part := range []string{"gorovod-rendezvous-v1", dir, method, ts, nonce} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	h.Write(body)
	return h.Sum(nil), nil
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// nonceCache remembers nonces long enough to refuse replays within the
// accepted clock window.
type nonceCache struct {
	mu     sync.Mutex
	seen   map[string]time.Time
	window time.Duration
}

// add reports false when nonce was already used.
func (c *nonceCache) add(nonce string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[string]time.Time{}
	}
	if _, dup := c.seen[nonce]; dup {
		return false
	}
	if len(c.seen) >= 1024 {
		for n, t := range c.seen {
			if now.Sub(t) > 2*c.window {
				delete(c.seen, n)
			}
		}
	}
	c.seen[nonce] = now
	return true
}

// serverAuth verifies the request signature and signs the response.
func (s *Server) serverAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	ts, nonce, sig := first(md, mdTS), first(md, mdNonce), first(md, mdMAC)
	if ts == "" || nonce == "" || sig == "" {
		return nil, toStatus(errorf(ErrAuth, "%s: request is not signed (is the worker using the job secret, GOROVOD_SECRET?)", info.FullMethod))
	}
	want, err := mac(s.cfg.Secret, "req", info.FullMethod, ts, nonce, req)
	if err != nil {
		return nil, toStatus(errorf(ErrInvalid, "%s: encoding request: %v", info.FullMethod, err))
	}
	got, err := hex.DecodeString(sig)
	if err != nil || !hmac.Equal(got, want) {
		s.log.Warn("refused a rendezvous request with a wrong signature", zapMethod(info.FullMethod))
		return nil, toStatus(errorf(ErrAuth, "%s: request signature does not match the job secret (wrong GOROVOD_SECRET?)", info.FullMethod))
	}
	nanos, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return nil, toStatus(errorf(ErrAuth, "%s: malformed timestamp %q", info.FullMethod, ts))
	}
	now := time.Now()
	if skew := now.Sub(time.Unix(0, nanos)); skew > s.skew || skew < -s.skew {
		return nil, toStatus(errorf(ErrAuth, "%s: request timestamp is %v away from the server clock (limit %v); check the hosts' clocks", info.FullMethod, skew.Round(time.Second), s.skew))
	}
	if !s.nonces.add(nonce, now) {
		return nil, toStatus(errorf(ErrAuth, "%s: replayed request (nonce %s seen before)", info.FullMethod, nonce))
	}
	resp, err := handler(ctx, req)
	if err != nil {
		return nil, err
	}
	rm, err := mac(s.cfg.Secret, "resp", info.FullMethod, ts, nonce, resp)
	if err != nil {
		return nil, toStatus(errorf(ErrInvalid, "%s: encoding response: %v", info.FullMethod, err))
	}
	if err := grpc.SetHeader(ctx, metadata.Pairs(mdRespMAC, hex.EncodeToString(rm))); err != nil {
		return nil, err
	}
	return resp, nil
}

// clientAuth signs each call and verifies the server's answer.
func clientAuth(secret []byte, addr string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		ts := strconv.FormatInt(time.Now().UnixNano(), 10)
		var nb [16]byte
		if _, err := rand.Read(nb[:]); err != nil {
			return err
		}
		nonce := hex.EncodeToString(nb[:])
		sig, err := mac(secret, "req", method, ts, nonce, req)
		if err != nil {
			return errorf(ErrInvalid, "%s: encoding request: %v", method, err)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, mdTS, ts, mdNonce, nonce, mdMAC, hex.EncodeToString(sig))
		var hdr metadata.MD
		if err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Header(&hdr))...); err != nil {
			return err
		}
		want, err := mac(secret, "resp", method, ts, nonce, reply)
		if err != nil {
			return errorf(ErrInvalid, "%s: encoding response: %v", method, err)
		}
		got, err := hex.DecodeString(first(hdr, mdRespMAC))
		if err != nil || !hmac.Equal(got, want) {
			return errorf(ErrAuth, "%s: the answer of %s is not signed with the job secret (another job's service, or a wrong GOROVOD_SECRET)", method, addr)
		}
		return nil
	}
}
