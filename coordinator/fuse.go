package coordinator

import "slices"

// fusible reports whether r may absorb other responses (allreduce only:
// the executor packs same-dtype buffers into one and reduces them at once).
func fusible(r *Response) bool {
	return r.Op == OpAllreduce && r.Error == ""
}

// compatible reports whether b can be fused into a.
func compatible(a, b *Response) bool {
	return fusible(b) && a.Op == b.Op && a.DType == b.DType && a.ReduceOp == b.ReduceOp &&
		a.Prescale == b.Prescale && a.Postscale == b.Postscale && a.Device == b.Device &&
		a.ProcessSet == b.ProcessSet && slices.Equal(a.JoinedRanks, b.JoinedRanks)
}

// fuse merges compatible allreduce responses greedily, as Horovod does:
// each response absorbs the following compatible ones while the total stays
// within threshold bytes; a non-matching response is skipped (and kept, in
// order, for the next round) as long as the bytes skipped so far would also
// fit, so interleaved dtypes still fuse. threshold 0 disables fusion. The
// result is a deterministic function of the input, so every rank fusing the
// same list gets the same plan.
func fuse(in []*Response, threshold int64) []Response {
	if threshold <= 0 || len(in) < 2 {
		out := make([]Response, len(in))
		for i, r := range in {
			out[i] = *r
		}
		return out
	}
	var out []Response
	q := in
	var skipped []*Response
	for len(q) > 0 {
		r := *q[0]
		q = q[1:]
		if !fusible(&r) {
			out = append(out, r)
			continue
		}
		size := r.Bytes()
		var skippedSize int64
		skipped = skipped[:0]
		i := 0
		merged := false
		for i < len(q) {
			n := q[i]
			nb := n.Bytes()
			if compatible(&r, n) && size+nb <= threshold {
				if !merged {
					// r's slices belong to the input (or the cache): copy
					// before appending, sized for the worst case.
					r.Names = append(make([]string, 0, len(q)+1), r.Names...)
					r.Counts = append(make([]int64, 0, len(q)+1), r.Counts...)
					merged = true
				}
				r.Names = append(r.Names, n.Names...)
				r.Counts = append(r.Counts, n.Counts...)
				size += nb
				i++
				continue
			}
			skippedSize += nb
			if size+skippedSize > threshold {
				break
			}
			skipped = append(skipped, n)
			i++
		}
		out = append(out, r)
		if len(skipped) > 0 {
			rest := make([]*Response, 0, len(skipped)+len(q)-i)
			rest = append(rest, skipped...)
			q = append(rest, q[i:]...)
		} else {
			q = q[i:]
		}
	}
	return out
}
