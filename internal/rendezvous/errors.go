package rendezvous

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error kinds. Server and client errors wrap one of them, so callers branch
// with errors.Is; the client rebuilds them from the gRPC status code.
var (
	// ErrAuth: a request or response is not signed with the job secret.
	ErrAuth = errors.New("rendezvous authentication failed")
	// ErrStartTimeout: not every rank registered within the start timeout.
	ErrStartTimeout = errors.New("rendezvous start timeout")
	// ErrAborted: the launcher gave up on the epoch (a worker exited
	// before registering).
	ErrAborted = errors.New("rendezvous aborted")
	// ErrDuplicateRank: a rank registered twice in one epoch.
	ErrDuplicateRank = errors.New("rank registered twice")
	// ErrEpoch: the request names an epoch the server does not serve.
	ErrEpoch = errors.New("wrong rendezvous epoch")
	// ErrInvalid: a request or configuration field is out of range.
	ErrInvalid = errors.New("invalid rendezvous request")
	// ErrNotReady: GetWorld asked for a world that is not complete yet.
	ErrNotReady = errors.New("world not complete")
	// ErrUnavailable: the service cannot be reached or has stopped.
	ErrUnavailable = errors.New("rendezvous service unavailable")
)

// kindError carries a kind and the detail the server sends on the wire
// (the detail alone, so the client does not repeat the kind's text).
type kindError struct {
	kind   error
	detail string
}

func (e *kindError) Error() string { return e.kind.Error() + ": " + e.detail }
func (e *kindError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, detail: fmt.Sprintf(format, args...)}
}

// kindCodes maps kinds to gRPC codes and to the ErrorInfo reason that
// identifies the kind on the wire (codes alone are ambiguous: a deadline
// propagated by gRPC also arrives as DeadlineExceeded).
var kindCodes = []struct {
	kind   error
	code   codes.Code
	reason string
}{
	{ErrAuth, codes.Unauthenticated, "AUTH"},
	{ErrStartTimeout, codes.DeadlineExceeded, "START_TIMEOUT"},
	{ErrAborted, codes.Aborted, "ABORTED"},
	{ErrDuplicateRank, codes.AlreadyExists, "DUPLICATE_RANK"},
	{ErrEpoch, codes.FailedPrecondition, "EPOCH"},
	{ErrInvalid, codes.InvalidArgument, "INVALID"},
	{ErrNotReady, codes.NotFound, "NOT_READY"},
	{ErrUnavailable, codes.Unavailable, "UNAVAILABLE"},
}

const errorDomain = "rendezvous.gorovod"

// toStatus turns a server-side error into a gRPC status error.
func toStatus(err error) error {
	var ke *kindError
	if errors.As(err, &ke) {
		for _, kc := range kindCodes {
			if ke.kind == kc.kind {
				st := status.New(kc.code, ke.detail)
				if withInfo, e := st.WithDetails(&errdetails.ErrorInfo{Reason: kc.reason, Domain: errorDomain}); e == nil {
					st = withInfo
				}
				return st.Err()
			}
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, err.Error())
}

// fromStatus turns an error returned by a gRPC call into a kind error. The
// caller's own context ending is reported as that (it is not the server's
// start timeout, even though both travel as DeadlineExceeded).
func fromStatus(ctx context.Context, addr string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("waiting for rendezvous service at %s: %w", addr, ctxErr)
	}
	var ke *kindError
	if errors.As(err, &ke) {
		return err // raised by the client interceptor itself
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%w: %s: %v", ErrUnavailable, addr, err)
	}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetDomain() != errorDomain {
			continue
		}
		for _, kc := range kindCodes {
			if info.GetReason() == kc.reason {
				return &kindError{kind: kc.kind, detail: st.Message()}
			}
		}
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("%w: %s: %s", ErrUnavailable, addr, st.Message())
	case codes.Unauthenticated:
		return fmt.Errorf("%w: %s: %s", ErrAuth, addr, st.Message())
	}
	return fmt.Errorf("rendezvous service at %s: %s: %s", addr, st.Code(), st.Message())
}
