// Command mkfake builds the NCCL/CUDA runtime test double into a directory
// (make fakenccl): point LD_LIBRARY_PATH at it and nccl.Load loads the double.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/gorovod/gorovod/nccl/fakenccl"
)

func main() {
	out := flag.String("o", "bin/fakenccl", "output directory")
	version := flag.Int("version", 21803, "ncclGetVersion code (2804 = 2.8.4: no ncclAvg, no bfloat16)")
	noConfig := flag.Bool("no-config", false, "leave out ncclCommInitRankConfig and ncclGetLastError (NCCL < 2.14)")
	flag.Parse()
	if err := fakenccl.Build(context.Background(), *out, fakenccl.Options{Version: *version, NoConfig: *noConfig}); err != nil {
		fmt.Fprintln(os.Stderr, "mkfake:", err)
		os.Exit(1)
	}
	fmt.Printf("built %s/%s and %s/%s\n", *out, fakenccl.NCCLName, *out, fakenccl.CUDARTName)
}
