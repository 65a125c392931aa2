// Package chaos runs real jobs (gorun starting test/worker -mode chaos, a mix
// of collectives with checked results) and injects one fault per run at a
// random point: SIGKILL of a worker, of rank 0 or of gorun; SIGSTOP of a
// worker past the progress deadline (GOROVOD_PROGRESS_TIMEOUT) or short of
// it; garbage bytes sent to every listening port of the job (the workers'
// data-plane listeners and gorun's rendezvous service). Jobs run with 2 to 4
// ranks over shared memory or TCP.
//
// Each run is checked for:
//   - hang: gorun did not exit within the run's deadline;
//   - orphan: a worker process outlived gorun;
//   - leftover: a file of this job (gorovod-<job tag>-*) stayed in /dev/shm;
//   - blame: after a kill or a stop, gorun's exit code (128+9 for a kill)
//     or its first error line, or a surviving rank's error, does not name
//     the injected rank first;
//   - other: a job that should have succeeded (a short stop, garbage)
//     failed, or a survivor ended without saying why.
//
// The test fails when any count is not zero. Runs are drawn from a seeded
// generator: the seed is printed, and `-chaos.seed S` replays the same
// scenarios (`-chaos.run N` only run N of them). `make chaos` runs 200;
// `make test` runs the short default.
//
//	go test ./test/chaos -chaos.runs 200 -chaos.seed 42 -v
package chaos
