// Package timeline writes Horovod's timeline: a Chrome-trace JSON file
// (open it in https://ui.perfetto.dev or chrome://tracing) showing, on rank
// 0, how each tensor was negotiated and executed.
//
// # Layout
//
// Every tensor name is a "process" (pid from 1 in order of first
// appearance, named by a process_name metadata event); pid 0 holds the
// loop's global events. On a tensor's row:
//
//	NEGOTIATE_ALLREDUCE  B ... E   first rank's submission to rank 0's decision
//	  "0", "2", "1"      X dur 0   when each rank became ready (args.rank): who is late
//	ALLREDUCE            B ... E   the op (args: dtype, count, fused, process_set, error)
//	  QUEUE                        decided, waiting behind earlier responses
//	  MEMCPY_IN_FUSION_BUFFER      packing (fused responses only)
//	  CPU_ALLREDUCE                the collective (name chosen by the loop)
//	  MEMCPY_OUT_FUSION_BUFFER
//
// Tensors served from the response cache have a zero-length negotiation
// span and no per-rank marks. With Options.MarkCycles, pid 0 gets a global
// CYCLE_START instant per negotiation cycle. Timestamps are microseconds
// since Options.Origin, taken from the clocks the callers pass.
//
// # Who calls what
//
// The coordinator calls the Observer methods (OnNegotiateStart,
// OnRankReady, OnNegotiateEnd, OnCycleStart) from Cycle on rank 0. The
// background loop then calls OpStart for each response of the cycle,
// Activity as it packs, runs and unpacks, and OpEnd when done. The methods
// repair sequences that do not match (a span still open is closed before
// a new one starts; ends without starts are ignored), so B and E events
// always balance per tensor, including for a timeline started mid-run
// through a Switch. A nil *Timeline and a nil or empty *Switch are valid
// receivers that do nothing, so the loop calls them unconditionally.
//
// # Size and durability
//
// The file is capped at Options.MaxBytes (64 MiB by default; Horovod's
// timelines grow without bound and users report gigabyte files). When the
// next event would not leave room to end every open span, those spans are
// ended, one global "timeline truncated" instant (args.max_bytes) is
// written, and every later event is dropped and counted in Stats.Dropped.
// Use a Switch to record a window of a long run instead.
//
// Events are written in the array form ("[" event, event, ... "]"). Close
// writes the closing bracket, making the file valid JSON. Writes happen in
// whole events (a 64 KiB buffer, also flushed when an event arrives
// Options.FlushInterval after the last write, by Flush and by Close), so a
// file left by a crashed process ends after a complete event and still
// loads in Perfetto and chrome://tracing, which accept the array form
// without its closing bracket; what was buffered at the crash is lost.
package timeline
