//go:build !linux

package ops

// hostLoad is Linux's /proc/loadavg sampler; elsewhere the host is never
// seen oversubscribed.
type hostLoad struct{}

func newHostLoad() *hostLoad { return &hostLoad{} }

func (h *hostLoad) oversubscribed() bool { return false }

func (h *hostLoad) close() {}
