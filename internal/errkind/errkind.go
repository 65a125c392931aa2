// Package errkind holds the error kinds a Gorovod caller can branch on with
// errors.Is. Package collective re-exports them (collective.ErrTimeout is
// errkind.Timeout); the layers below the API wrap them so that every error
// a caller gets matches one kind.
package errkind

import (
	"errors"

	"github.com/gorovod/gorovod/internal/transport"
)

var (
	// NotInitialized: a package-level call before Init.
	NotInitialized = errors.New("gorovod: not initialized (call collective.Init first)")
	// Shutdown: the world was closed (by this rank or another).
	Shutdown = errors.New("gorovod: shut down")
	// PeerLost: a peer process died or its link broke.
	PeerLost = transport.ErrPeerLost
	// Mismatch: ranks submitted the same name with different parameters.
	Mismatch = errors.New("gorovod: mismatched collective")
	// Timeout: a deadline passed (start-up, progress, stall).
	Timeout = errors.New("gorovod: timed out")
	// Invalid: a bad argument, configuration or environment.
	Invalid = errors.New("gorovod: invalid argument")
	// HostsUpdated: the elastic membership changed.
	HostsUpdated = errors.New("gorovod: hosts updated")
	// Canceled: the caller's context ended before the collective started,
	// and the call was withdrawn on every rank.
	Canceled = errors.New("gorovod: canceled")
)
