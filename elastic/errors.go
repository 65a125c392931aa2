package elastic

import "errors"

// Error kinds; match them with errors.Is.
var (
	// ErrDiscovery: host discovery failed or printed something unreadable.
	ErrDiscovery = errors.New("elastic: host discovery")
	// ErrMinNP: fewer than --min-np slots were available for longer than
	// --elastic-timeout.
	ErrMinNP = errors.New("elastic: not enough slots")
	// ErrResetLimit: the job reset more often than --reset-limit allows.
	ErrResetLimit = errors.New("elastic: reset limit reached")
	// ErrRemoved: the driver removed this worker from the job (it missed
	// its heartbeats, or its registration timed out).
	ErrRemoved = errors.New("elastic: removed from the job")
	// ErrInvalid: a bad argument or configuration.
	ErrInvalid = errors.New("elastic: invalid")
)
