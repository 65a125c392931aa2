// Package worldhook lets package collectivetest build worlds on in-memory
// meshes without a public collective option that takes an internal type.
// Package collective fills the variables in its init.
package worldhook

import "github.com/gorovod/gorovod/internal/transport"

var (
	// WithMesh returns a collective.Option (as any) that builds a world on
	// m, reporting lost peers to oracle (a value NewOracle returned, shared
	// by every rank of one job).
	WithMesh func(m transport.Mesh, oracle any) any
	// NewOracle returns an in-process failure oracle for one job of size
	// ranks.
	NewOracle func(size int) any
)
