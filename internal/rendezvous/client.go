package rendezvous

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/gorovod/gorovod/internal/rendezvous/rendezvouspb"
)

// Client talks to one rendezvous service. It is safe for concurrent use.
type Client struct {
	addr string
	conn *grpc.ClientConn
	rpc  pb.RendezvousClient
}

// Dial prepares a client for the service at addr (host:port). It does not
// wait for the service: calls wait for it until their context ends, so a
// worker may start before the service listens.
func Dial(addr string, secret []byte) (*Client, error) {
	if len(secret) == 0 {
		return nil, errorf(ErrInvalid, "empty job secret for rendezvous at %s", addr)
	}
	// Integrity and authenticity come from the HMAC on every call; the
	// contents (addresses, pids) are not confidential, so no TLS.
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(clientAuth(append([]byte(nil), secret...), addr)))
	if err != nil {
		return nil, fmt.Errorf("%w: rendezvous address %q: %v", ErrInvalid, addr, err)
	}
	return &Client{addr: addr, conn: conn, rpc: pb.NewRendezvousClient(conn)}, nil
}

// Close releases the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Register announces reg and blocks until the world of reg.Epoch is
// complete, the server's start timeout fails it (ErrStartTimeout naming the
// missing ranks), or ctx ends.
func (c *Client) Register(ctx context.Context, reg Registration) (World, error) {
	resp, err := c.rpc.Register(ctx, &pb.RegisterRequest{
		Epoch: reg.Epoch, Rank: int32(reg.Rank), Host: reg.Host, LocalRank: int32(reg.LocalRank),
		Addr: reg.Addr, Pid: int64(reg.Pid),
	}, grpc.WaitForReady(true))
	if err != nil {
		return World{}, fromStatus(ctx, c.addr, err)
	}
	w, err := worldFromPB(resp.GetWorld())
	if err == nil && w.Epoch != reg.Epoch {
		err = errorf(ErrEpoch, "asked for epoch %d, got a world of epoch %d", reg.Epoch, w.Epoch)
	}
	if err == nil && (reg.Rank >= w.Size || w.Peers[reg.Rank].Addr != reg.Addr) {
		err = errorf(ErrInvalid, "world of size %d does not list rank %d at %s", w.Size, reg.Rank, reg.Addr)
	}
	return w, err
}

// GetWorld returns the world of epoch if every rank registered, without
// waiting: ErrNotReady (naming the missing ranks) otherwise.
func (c *Client) GetWorld(ctx context.Context, epoch uint64) (World, error) {
	resp, err := c.rpc.GetWorld(ctx, &pb.GetWorldRequest{Epoch: epoch}, grpc.WaitForReady(true))
	if err != nil {
		return World{}, fromStatus(ctx, c.addr, err)
	}
	return worldFromPB(resp.GetWorld())
}

// ReportStatus tells the launcher how this worker is doing.
func (c *Client) ReportStatus(ctx context.Context, st Status) error {
	_, err := c.rpc.ReportStatus(ctx, statusToPB(st), grpc.WaitForReady(true))
	if err != nil {
		return fromStatus(ctx, c.addr, err)
	}
	return nil
}

// ReportFailure reports st (State is set to StateFailed; Kind and Suspect
// say what st knows of the cause) and returns the failure oracle's verdict
// on st's epoch: the rank the job's failure started at (Rank) and its
// description, which may be st's own. A stall report may wait for the
// verdict up to the server's settle window (see FailurePeerStalled).
func (c *Client) ReportFailure(ctx context.Context, st Status) (Status, error) {
	st.State = StateFailed
	resp, err := c.rpc.ReportStatus(ctx, statusToPB(st), grpc.WaitForReady(true))
	if err != nil {
		return Status{}, fromStatus(ctx, c.addr, err)
	}
	f := resp.GetFirstFailure()
	if f == nil {
		return st, nil
	}
	return statusFromPB(f), nil
}

// Register is Dial, Client.Register and Close in one call.
func Register(ctx context.Context, addr string, secret []byte, reg Registration) (World, error) {
	c, err := Dial(addr, secret)
	if err != nil {
		return World{}, err
	}
	defer c.Close()
	return c.Register(ctx, reg)
}
