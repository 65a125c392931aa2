#!/usr/bin/env python3
"""ddp_step.py: the training-step job of `gorovod-bench train` through
PyTorch's DistributedDataParallel with the gloo backend, for comparison.

    ddp_step.py -n NP [-model resnet50|transformer] [-layers 12]
                [-compute 0.15] [-spin] [-steps 10] [-warmup 2] [-baseline MS]

The model is the same list of parameter tensors as gorovod-bench's (ResNet-50's
161 tensors, 25,557,032 parameters; or BERT-base encoder layers), each as a 1-D
parameter of a layer whose backward spends that tensor's share of the compute
(sleeping, or spinning with -spin) before it yields the gradient (all ones),
last layer first. DDP buckets the gradients (25 MB) and allreduces each bucket
as it fills, overlapping the rest of the backward pass; the step ends when
backward returns with every gradient averaged. Prints the same TRAIN row as
gorovod-bench train: step time (the slowest rank's, median over steps), the
compute in it, communication not hidden by compute, and efficiency against
-baseline (the np 1 step time, ms).
"""
import argparse
import socket
import statistics
import sys
import time


def resnet50():
    g = []

    def conv(name, out, inp, k):
        g.append((name + ".weight", out * inp * k * k))

    def bn(name, c):
        g.extend([(name + ".weight", c), (name + ".bias", c)])

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inp = 64
    for stage, blocks in enumerate([3, 4, 6, 3]):
        w = 64 << stage
        for b in range(blocks):
            p = f"layer{stage + 1}.{b}."
            conv(p + "conv1", w, inp, 1)
            bn(p + "bn1", w)
            conv(p + "conv2", w, w, 3)
            bn(p + "bn2", w)
            conv(p + "conv3", 4 * w, w, 1)
            bn(p + "bn3", 4 * w)
            if b == 0:
                conv(p + "downsample.0", 4 * w, inp, 1)
                bn(p + "downsample.1", 4 * w)
            inp = 4 * w
    g.extend([("fc.weight", 1000 * 2048), ("fc.bias", 1000)])
    return g


def transformer(layers):
    d, ff = 768, 3072
    g = []
    for l in range(layers):
        p = f"layer{l}."
        for m in "qkvo":
            g.extend([(p + f"attn.{m}.weight", d * d), (p + f"attn.{m}.bias", d)])
        g.extend([(p + "ln1.weight", d), (p + "ln1.bias", d), (p + "ff1.weight", ff * d), (p + "ff1.bias", ff),
                  (p + "ff2.weight", d * ff), (p + "ff2.bias", d), (p + "ln2.weight", d), (p + "ln2.bias", d)])
    return g


def worker(rank, args, port):
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=args.n)
    model = resnet50() if args.model == "resnet50" else transformer(args.layers)
    total = sum(c for _, c in model)
    # ends[i]: compute done (seconds after backward starts) when tensor i's
    # gradient is ready; backward runs from the last tensor to the first.
    ends, done = [0.0] * len(model), 0
    for i in range(len(model) - 1, -1, -1):
        done += model[i][1]
        ends[i] = args.compute * done / total
    clock = {"start": 0.0}

    def compute_until(t):
        if args.spin:
            while time.perf_counter() < t:
                pass
        else:
            d = t - time.perf_counter()
            if d > 0:
                time.sleep(d)

    class Gap(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, i, p):
            ctx.i = i
            return x + 0

        @staticmethod
        def backward(ctx, gx):
            compute_until(clock["start"] + ends[ctx.i])
            return gx, None, torch.ones(model[ctx.i][1])

    class Synthetic(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ps = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(c)) for _, c in model])

        def forward(self, x):
            for i, p in enumerate(self.ps):
                x = Gap.apply(x, i, p)
            return x

    net = DDP(Synthetic()) if args.n > 1 else Synthetic()
    x = torch.ones(1, requires_grad=True)
    steps = []
    for s in range(args.warmup + args.steps):
        loss = net(x).sum()
        dist.barrier()
        clock["start"] = time.perf_counter()
        loss.backward()
        took = torch.tensor([time.perf_counter() - clock["start"]], dtype=torch.float64)
        dist.all_reduce(took, op=dist.ReduceOp.MAX)
        if s >= args.warmup:
            steps.append(took.item())
        for p in net.parameters():
            p.grad = None
    step = statistics.median(steps) * 1e3
    compute = args.compute * 1e3
    eff = f"{args.baseline / step:.3f}" if args.baseline > 0 else "-"
    if rank == 0:
        mode = "spin" if args.spin else "sleep"
        print(f"# ddp_step.py: torch {torch.__version__} DDP gloo, {args.model}, {len(model)} tensors, "
              f"{total / 1e6:.1f} M parameters, np {args.n}, backward compute {compute:.0f}ms ({mode}) per step, "
              f"median of {args.steps} steps")
        print(f"TRAIN ddp-gloo {args.model:<12} {args.n:4d} {step:10.2f} {compute:12.2f} {max(step - compute, 0):12.2f} {eff:>10}",
              flush=True)
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-n", type=int, default=2)
    p.add_argument("-model", default="resnet50", choices=["resnet50", "transformer"])
    p.add_argument("-layers", type=int, default=12)
    p.add_argument("-compute", type=float, default=0.15, help="backward compute per step, seconds")
    p.add_argument("-spin", action="store_true")
    p.add_argument("-steps", type=int, default=10)
    p.add_argument("-warmup", type=int, default=2)
    p.add_argument("-baseline", type=float, default=0, help="np 1 step time, ms")
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import torch.multiprocessing as mp

    mp.start_processes(worker, args=(args, port), nprocs=args.n, start_method="spawn")


if __name__ == "__main__":
    sys.exit(main())
