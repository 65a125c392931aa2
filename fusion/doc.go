// Package fusion holds the memory of fused collectives: a persistent Buffer
// that packs several tensors of one dtype back to back so a single
// allreduce covers them all, and unpacks the result; and a size-classed
// Pool of byte slices it (and others) draw from.
//
// What to fuse is decided elsewhere (the coordinator's fusion planning);
// this package only moves bytes. A Buffer grows to the next power-of-two
// size class when a larger fused op arrives and keeps that memory, so the
// steady state of a training loop — the same fused ops every step — packs
// and unpacks without allocating.
//
//	fb := fusion.NewBuffer()
//	packed := fb.Pack(bufs)          // bufs [][]byte, same dtype
//	err := allreduce(packed)         // one collective for all
//	fb.Unpack(packed, bufs)          // results back in place
package fusion
