//go:build !linux

package launch

// AllowedCPUs returns nil where affinity is not supported: workers stay
// unbound.
func AllowedCPUs() []int { return nil }
