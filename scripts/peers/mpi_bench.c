/* mpi_bench.c: the OpenMPI peer Gorovod is measured against.
 *
 *   mpirun -np N mpi_bench [-o allreduce|allgather|broadcast|reducescatter|alltoall]
 *                          [-s 4K,1M,16M] [-r REPS] [-t SECONDS] [-l LABEL]
 *
 * float32 sum; allreduce in place (MPI_IN_PLACE), as gorovod-bench -I. Sizes
 * are the whole buffer as nccl-tests count them: the allreduced buffer, the
 * gathered total (allgather), the reduce-scatter input, the alltoall send
 * buffer. Each of REPS batches
 * runs enough iterations to last about SECONDS (calibrated on rank 0 and
 * broadcast); a batch's time is the slowest rank's; the row shows the median
 * batch. busbw by the nccl-tests convention: allreduce x 2(n-1)/n,
 * allgather, reduce-scatter and alltoall x (n-1)/n, broadcast x 1. One line
 * per size:
 *   RESULT label op np bytes iters reps med_us min_us max_us algbw_GBps busbw_GBps wrong
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rank, np;

static long parse_size(const char *s) {
    char *end;
    double v = strtod(s, &end);
    switch (*end) {
    case 'K': case 'k': v *= 1024; break;
    case 'M': case 'm': v *= 1024 * 1024; break;
    case 'G': case 'g': v *= 1024.0 * 1024 * 1024; break;
    }
    return (long)v;
}

/* one op on count floats of buf (recv: the output where it is not buf) */
static void run_op(const char *op, float *buf, float *recv, long count) {
    if (!strcmp(op, "allreduce"))
        MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    else if (!strcmp(op, "allgather"))
        MPI_Allgather(buf, (int)(count / np), MPI_FLOAT, recv, (int)(count / np), MPI_FLOAT, MPI_COMM_WORLD);
    else if (!strcmp(op, "broadcast"))
        MPI_Bcast(buf, (int)count, MPI_FLOAT, 0, MPI_COMM_WORLD);
    else if (!strcmp(op, "alltoall"))
        MPI_Alltoall(buf, (int)(count / np), MPI_FLOAT, recv, (int)(count / np), MPI_FLOAT, MPI_COMM_WORLD);
    else
        MPI_Reduce_scatter_block(buf, recv, (int)(count / np), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}

/* check: fills inputs with rank+1 and checks one op's output */
static long check(const char *op, float *buf, float *recv, long count) {
    long wrong = 0, i, per = count / np;
    for (i = 0; i < count; i++) buf[i] = (float)(rank + 1);
    run_op(op, buf, recv, count);
    if (!strcmp(op, "allreduce")) {
        for (i = 0; i < count; i++) wrong += buf[i] != (float)(np * (np + 1) / 2);
    } else if (!strcmp(op, "allgather")) {
        for (i = 0; i < per * np; i++) wrong += recv[i] != (float)(i / per + 1);
    } else if (!strcmp(op, "broadcast")) {
        for (i = 0; i < count; i++) wrong += buf[i] != 1.0f;
    } else if (!strcmp(op, "alltoall")) {
        for (i = 0; i < per * np; i++) wrong += recv[i] != (float)(i / per + 1);
    } else {
        for (i = 0; i < per; i++) wrong += recv[i] != (float)(np * (np + 1) / 2);
    }
    return wrong;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *op = "allreduce", *sizes = "4K,64K,1M,16M,64M", *label = "mpi";
    int reps = 5;
    double batch = 0.1;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &np);
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-o")) op = argv[i + 1];
        else if (!strcmp(argv[i], "-s")) sizes = argv[i + 1];
        else if (!strcmp(argv[i], "-r")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-t")) batch = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "-l")) label = argv[i + 1];
    }
    if (strcmp(op, "allreduce") && strcmp(op, "allgather") && strcmp(op, "broadcast") && strcmp(op, "reducescatter") &&
        strcmp(op, "alltoall")) {
        if (rank == 0) fprintf(stderr, "mpi_bench: unknown op %s\n", op);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    if (reps < 1 || reps > 1000) reps = 5;
    char *list = strdup(sizes);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        long bytes = parse_size(tok), count = bytes / 4;
        if (strcmp(op, "allreduce") && strcmp(op, "broadcast")) count -= count % np;
        if (count < np) count = np;
        bytes = count * 4;
        float *buf = malloc(bytes), *recv = malloc(bytes);
        for (long i = 0; i < count; i++) buf[i] = recv[i] = 1.0f;
        for (int w = 0; w < 3; w++) run_op(op, buf, recv, count);
        /* iterations per batch: enough for the batch time, decided on rank 0 */
        long iters = 1;
        for (;;) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            for (long k = 0; k < iters; k++) run_op(op, buf, recv, count);
            double dt = MPI_Wtime() - t0;
            int more = dt < batch / 4 && iters < (1L << 30);
            MPI_Bcast(&more, 1, MPI_INT, 0, MPI_COMM_WORLD);
            if (!more) {
                MPI_Bcast(&dt, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
                if (dt > 0) iters = (long)(iters * batch / dt) + 1;
                break;
            }
            iters *= 4;
        }
        double *per = malloc(sizeof(double) * reps);
        for (int r = 0; r < reps; r++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            for (long k = 0; k < iters; k++) run_op(op, buf, recv, count);
            double us = (MPI_Wtime() - t0) / iters * 1e6, slowest;
            MPI_Allreduce(&us, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
            per[r] = slowest;
        }
        qsort(per, reps, sizeof(double), cmp);
        double med = reps % 2 ? per[reps / 2] : (per[reps / 2 - 1] + per[reps / 2]) / 2;
        long wrong = check(op, buf, recv, count), total;
        MPI_Allreduce(&wrong, &total, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
        double n = np, factor = !strcmp(op, "allreduce") ? 2 * (n - 1) / n : !strcmp(op, "broadcast") ? 1 : (n - 1) / n;
        double alg = bytes / (med * 1e-6) / 1e9;
        if (rank == 0)
            printf("RESULT %s %s %d %ld %ld %d %.1f %.1f %.1f %.3f %.3f %ld\n", label, op, np, bytes, iters, reps,
                   med, per[0], per[reps - 1], alg, alg * factor, total);
        fflush(stdout);
        free(per); free(buf); free(recv);
    }
    free(list);
    MPI_Finalize();
    return 0;
}
