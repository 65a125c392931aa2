package ncclbackend

import (
	"context"
	"fmt"
	"slices"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/coordinator"
	"github.com/gorovod/gorovod/internal/tensor"
	"github.com/gorovod/gorovod/nccl"
	"github.com/gorovod/gorovod/ops"
)

// Hierarchical allreduce of device tensors (GOROVOD_HIERARCHICAL_ALLREDUCE,
// as for host tensors): NCCL reduce-scatter among the ranks of a host, the
// host data plane across hosts for each rank's shard, NCCL allgather among
// the ranks of the host. It applies when the group spans several hosts with
// the same number (more than one) of ranks each; otherwise the flat
// communicator runs the allreduce.

// hierarchy is how a group's members sit on hosts.
type hierarchy struct {
	local    []int // group indices of the members on this rank's host, ascending
	localIdx int   // this rank's position in local
	peers    []int // the group indices at position localIdx on every host, in host order
}

// plan returns g's hierarchy when the hierarchical allreduce applies.
func plan(g collective.Group) (hierarchy, bool) {
	if g.Host == nil || !g.Host.Config().Hierarchical || len(g.Hosts) != len(g.Members) {
		return hierarchy{}, false
	}
	var hosts []string
	byHost := map[string][]int{}
	for i, h := range g.Hosts {
		if _, ok := byHost[h]; !ok {
			hosts = append(hosts, h)
		}
		byHost[h] = append(byHost[h], i)
	}
	if len(hosts) < 2 {
		return hierarchy{}, false
	}
	per := len(byHost[hosts[0]])
	for _, h := range hosts {
		if len(byHost[h]) != per {
			return hierarchy{}, false
		}
	}
	if per < 2 {
		return hierarchy{}, false
	}
	local := byHost[g.Hosts[g.Rank]]
	idx := slices.Index(local, g.Rank)
	peers := make([]int, len(hosts))
	for i, h := range hosts {
		peers[i] = byHost[h][idx]
	}
	return hierarchy{local: local, localIdx: idx, peers: peers}, true
}

// localComm makes the communicator of this rank's host: each host's first
// member makes an id, and one allgather over the host plane hands every
// rank the ids (a status byte, then the id, per member).
func (b *Backend) localComm(g collective.Group, h hierarchy, device int) func(context.Context) (*nccl.Comm, error) {
	return func(ctx context.Context) (*nccl.Comm, error) {
		const msgLen = 1 + len(nccl.UniqueID{})
		msg := make([]byte, msgLen)
		if h.localIdx == 0 {
			if id, err := b.lib.GetUniqueID(); err == nil {
				msg[0] = 1
				copy(msg[1:], id[:])
			}
		}
		all := make([]byte, msgLen*len(g.Members))
		counts := make([]int, len(g.Members))
		for i := range counts {
			counts[i] = msgLen
		}
		if err := g.Host.Allgatherv(ctx, msg, all, counts); err != nil {
			return nil, fmt.Errorf("nccl: exchanging the host communicators' ids: %w", err)
		}
		root := all[h.local[0]*msgLen:][:msgLen]
		if root[0] != 1 {
			return nil, fmt.Errorf("%w: rank %d could not create an NCCL unique id; see its log", nccl.ErrAborted, g.Members[h.local[0]])
		}
		var id nccl.UniqueID
		copy(id[:], root[1:])
		return b.lib.NewComm(ctx, len(h.local), h.localIdx, id, device, b.opts...)
	}
}

// hierarchicalAllreduce runs a fused allreduce on x, the host's
// communicator; the cross-host step allgathers every rank's shard over the
// host plane and reduces those of this rank's peers in host order, so that
// every rank computes the same result.
func hierarchicalAllreduce(ctx context.Context, x *nccl.Executor, r *coordinator.Response, calls []*collective.DeviceCall, g collective.Group, h hierarchy) error {
	ts := make([]nccl.Tensor, len(calls))
	for i, c := range calls {
		if c == nil {
			return fmt.Errorf("%w: hierarchical allreduce %q without a tensor on this rank", collective.ErrInvalid, r.Names[i])
		}
		ts[i] = nccl.Tensor{Ptr: c.In.Ptr, Count: c.In.Count}
	}
	rop := r.ReduceOp
	if rop == tensor.Average {
		rop = tensor.Sum
	}
	cross := func(ctx context.Context, shard []byte) error {
		n := len(shard)
		all := make([]byte, n*len(g.Members))
		counts := make([]int, len(g.Members))
		for i := range counts {
			counts[i] = n
		}
		if err := g.Host.Allgatherv(ctx, shard, all, counts); err != nil {
			return err
		}
		copy(shard, all[h.peers[0]*n:][:n])
		for _, p := range h.peers[1:] {
			if err := ops.Reduce(r.DType, rop, shard, all[p*n:][:n]); err != nil {
				return err
			}
		}
		return nil
	}
	return x.AllreduceHierarchical(ctx, ts, r.DType, r.ReduceOp, r.Prescale, r.Postscale, len(g.Members), cross)
}
