#!/usr/bin/env python3
"""gloo_bench.py: PyTorch's gloo backend (the ring Horovod's CPU path and DDP
use) as a peer of gorovod-bench.

    gloo_bench.py -n NP [-o allreduce|allgather|broadcast] [-s 4K,1M,16M]
                  [-r REPS] [-t SECONDS] [-l LABEL]

Starts NP processes on this host (TCP over loopback). float32 sum, allreduce
in place; sizes as nccl-tests count them (the gathered total for
allgather). Each of REPS batches runs enough iterations to last about
SECONDS; a batch's time is the slowest rank's; the row shows the median.
Prints the same RESULT lines as mpi_bench.c:
  RESULT label op np bytes iters reps med_us min_us max_us algbw_GBps busbw_GBps wrong
"""
import argparse
import os
import socket
import statistics
import sys
import time


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:].upper(), 1)
    return int(float(s[:-1] if mult > 1 else s) * mult)


def run_op(dist, op, buf, outs):
    if op == "allreduce":
        dist.all_reduce(buf)
    elif op == "allgather":
        dist.all_gather(outs, buf)
    else:
        dist.broadcast(buf, 0)


def worker(rank, args, port):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=args.n)
    n = args.n
    for tok in args.s.split(","):
        count = parse_size(tok) // 4
        if args.o == "allgather":
            count -= count % n
        count = max(count, n)
        per = count // n if args.o == "allgather" else count
        buf = torch.ones(per, dtype=torch.float32)
        outs = [torch.empty(per, dtype=torch.float32) for _ in range(n)] if args.o == "allgather" else None
        for _ in range(3):
            run_op(dist, args.o, buf, outs)
        iters = 1
        while True:
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(iters):
                run_op(dist, args.o, buf, outs)
            dt = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
            dist.broadcast(dt, 0)
            if dt.item() >= args.t / 4 or iters >= 1 << 20:
                iters = int(iters * args.t / max(dt.item(), 1e-9)) + 1
                break
            iters *= 4
        batches = []
        for _ in range(args.r):
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(iters):
                run_op(dist, args.o, buf, outs)
            us = torch.tensor([(time.perf_counter() - t0) / iters * 1e6], dtype=torch.float64)
            dist.all_reduce(us, op=dist.ReduceOp.MAX)
            batches.append(us.item())
        # check one op on fresh inputs
        buf.fill_(rank + 1)
        run_op(dist, args.o, buf, outs)
        if args.o == "allreduce":
            wrong = int((buf != n * (n + 1) / 2).sum())
        elif args.o == "allgather":
            wrong = sum(int((o != q + 1).sum()) for q, o in enumerate(outs))
        else:
            wrong = int((buf != 1).sum())
        w = torch.tensor([wrong])
        dist.all_reduce(w)
        med = statistics.median(batches)
        nbytes = count * 4
        factor = {"allreduce": 2 * (n - 1) / n, "allgather": (n - 1) / n}.get(args.o, 1.0)
        alg = nbytes / (med * 1e-6) / 1e9
        if rank == 0:
            print(f"RESULT {args.l} {args.o} {n} {nbytes} {iters} {args.r} {med:.1f} {min(batches):.1f} "
                  f"{max(batches):.1f} {alg:.3f} {alg * factor:.3f} {int(w.item())}", flush=True)
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-n", type=int, default=2)
    p.add_argument("-o", default="allreduce", choices=["allreduce", "allgather", "broadcast"])
    p.add_argument("-s", default="4K,64K,1M,16M,64M")
    p.add_argument("-r", type=int, default=5)
    p.add_argument("-t", type=float, default=0.1)
    p.add_argument("-l", default="gloo-ring")
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import torch.multiprocessing as mp

    mp.start_processes(worker, args=(args, port), nprocs=args.n, start_method="spawn")


if __name__ == "__main__":
    sys.exit(main())
