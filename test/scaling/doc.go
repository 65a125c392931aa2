// Package scaling measures how Gorovod's control plane grows with the job
// (negotiation cycles of up to 1024 in-process ranks driven in lock-step)
// and models the data plane's allreduce algorithms past what one machine
// can run (docs/scaling.md). The short tests run in `make test`; the full
// tables are printed with
//
//	GOROVOD_SCALING=1 go test ./test/scaling -run . -v
package scaling
