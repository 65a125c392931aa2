package collective

import (
	"context"
	"errors"
	"fmt"

	"github.com/gorovod/gorovod/coordinator"
	"github.com/gorovod/gorovod/internal/tensor"
	"github.com/gorovod/gorovod/internal/transport"
)

// kinds are the error kinds every error the API returns matches.
var kinds = []error{ErrNotInitialized, ErrShutdown, ErrPeerLost, ErrMismatch, ErrTimeout, ErrInvalid, ErrHostsUpdated, ErrCanceled}

// typed makes err match one of the kinds (nil stays nil): errors of the
// layers below are wrapped with the kind that says what the caller can do.
// fatal says the world's data plane failed with err: an error of no known
// kind then means a broken link (ErrPeerLost), else a bad argument.
func typed(err error, fatal bool) error {
	if err == nil {
		return nil
	}
	for _, k := range kinds {
		if errors.Is(err, k) {
			return err
		}
	}
	kind := ErrInvalid
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		kind = ErrTimeout
	case errors.Is(err, context.Canceled):
		kind = ErrCanceled
	case errors.Is(err, tensor.ErrInvalid), errors.Is(err, coordinator.ErrInvalid):
		kind = ErrInvalid
	case fatal, errors.Is(err, transport.ErrClosed), errors.Is(err, transport.ErrMalformed), errors.Is(err, coordinator.ErrMalformed):
		kind = ErrPeerLost
	}
	return fmt.Errorf("%w: %w", kind, err)
}
