package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"net"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The elastic control channel: a second gRPC service, long-lived across
// epochs, through which an elastic driver and its workers talk (joins,
// epoch notices, heartbeats). Its calls are opaque byte messages (the
// elastic package defines them) under the same request/response signing as
// Register (auth.go), so only holders of the job secret take part.

const controlService = "gorovod.rendezvous.ElasticControl"

// ControlMethods are the calls of the control channel.
var ControlMethods = []string{"Join", "Heartbeat"}

// ControlHandler answers one control call. An error travels back to the
// caller as a ControlError carrying its text.
type ControlHandler func(ctx context.Context, method string, req []byte) ([]byte, error)

// ErrControl wraps an error the control handler returned.
var ErrControl = errors.New("elastic control")

// ControlServer serves the control channel.
type ControlServer struct {
	grpc *grpc.Server
}

// NewControlServer returns a server that checks every call against secret
// and hands it to h.
func NewControlServer(secret []byte, log *zap.Logger, h ControlHandler) (*ControlServer, error) {
	if len(secret) == 0 {
		return nil, errorf(ErrInvalid, "control server secret is empty")
	}
	// The signing interceptor belongs to a Server; this one is never served.
	auth := NewServer(ServerConfig{Size: 1, Secret: secret, Logger: log})
	desc := grpc.ServiceDesc{ServiceName: controlService, HandlerType: (*any)(nil)}
	for _, m := range ControlMethods {
		desc.Methods = append(desc.Methods, grpc.MethodDesc{MethodName: m, Handler: controlMethod(m, h)})
	}
	s := &ControlServer{grpc: grpc.NewServer(grpc.UnaryInterceptor(auth.serverAuth))}
	s.grpc.RegisterService(&desc, struct{}{})
	return s, nil
}

func controlMethod(name string, h ControlHandler) func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
	return func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
		in := new(wrapperspb.BytesValue)
		if err := dec(in); err != nil {
			return nil, err
		}
		call := func(ctx context.Context, req any) (any, error) {
			out, err := h(ctx, name, req.(*wrapperspb.BytesValue).GetValue())
			if err != nil {
				if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
					return nil, status.FromContextError(err).Err()
				}
				return nil, status.Error(codes.FailedPrecondition, err.Error())
			}
			return wrapperspb.Bytes(out), nil
		}
		info := &grpc.UnaryServerInfo{Server: nil, FullMethod: "/" + controlService + "/" + name}
		return icpt(ctx, in, info, call)
	}
}

// Serve answers calls on lis until Stop.
func (s *ControlServer) Serve(lis net.Listener) error {
	if err := s.grpc.Serve(lis); err != nil && err != grpc.ErrServerStopped {
		return fmt.Errorf("%w: control service on %s: %v", ErrUnavailable, lis.Addr(), err)
	}
	return nil
}

// Stop ends every call in flight and closes the listeners.
func (s *ControlServer) Stop() { s.grpc.Stop() }

// ControlClient calls a control server. It is safe for concurrent use.
type ControlClient struct {
	addr string
	conn *grpc.ClientConn
}

// DialControl prepares a client of the control service at addr; calls wait
// for the service until their context ends.
func DialControl(addr string, secret []byte) (*ControlClient, error) {
	if len(secret) == 0 {
		return nil, errorf(ErrInvalid, "empty job secret for the control service at %s", addr)
	}
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(clientAuth(append([]byte(nil), secret...), addr)))
	if err != nil {
		return nil, fmt.Errorf("%w: control address %q: %v", ErrInvalid, addr, err)
	}
	return &ControlClient{addr: addr, conn: conn}, nil
}

// Call sends req to method and returns the answer. A handler's error comes
// back wrapping ErrControl.
func (c *ControlClient) Call(ctx context.Context, method string, req []byte) ([]byte, error) {
	out := new(wrapperspb.BytesValue)
	err := c.conn.Invoke(ctx, "/"+controlService+"/"+method, wrapperspb.Bytes(req), out, grpc.WaitForReady(true))
	if err != nil {
		if st, ok := status.FromError(err); ok && st.Code() == codes.FailedPrecondition && ctx.Err() == nil {
			return nil, fmt.Errorf("%w: %s", ErrControl, st.Message())
		}
		return nil, fromStatus(ctx, c.addr, err)
	}
	return out.GetValue(), nil
}

// Close releases the connection.
func (c *ControlClient) Close() error { return c.conn.Close() }
