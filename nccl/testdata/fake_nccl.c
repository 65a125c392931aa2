// A fake libnccl for the nccl package's tests: the NCCL entry points with
// NCCL's signatures, acting as a single-process world. "Device memory" is
// host memory (see fake_cudart.c), so a one-rank collective is a copy.
//
// Behaviour is chosen by the first byte of the unique id:
//   'H'  init never completes (peers never arrive) until aborted
//   'E'  from the second poll after the first collective, ncclCommGetAsyncError
//        reports ncclRemoteError (the first poll may be a nonblocking completion check)
// and by the count of an allreduce: 999 -> ncclInvalidArgument,
// 666 -> ncclRemoteError, 777 -> blocks until aborted. Every call is appended to $FAKE_NCCL_LOG.
//
// Compile-time variants: FAKE_VERSION (ncclGetVersion's code), FAKE_CONFIG
// (exports ncclCommInitRankConfig and ncclGetLastError, as 2.14+ does),
// FAKE_BROKEN (omits ncclAllReduce).
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct { char internal[128]; } ncclUniqueId;

typedef struct {
	int nranks, rank, mode, nonblocking;
	int pending; // polls left before a nonblocking operation completes
	int ops;
	int quiet; // polls after a collective before 'E' mode reports its error
	volatile int aborted;
} fake_comm;

typedef struct {
	size_t size;
	unsigned int magic, version;
	int blocking;
} fake_config;

static void flog(const char *fmt, ...) {
	const char *path = getenv("FAKE_NCCL_LOG");
	if (path == NULL || path[0] == 0) return;
	FILE *f = fopen(path, "a");
	if (f == NULL) return;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fputc('\n', f);
	fclose(f);
}

static size_t dtsize(int dt) {
	switch (dt) {
	case 0: case 1: return 1;
	case 6: case 9: return 2;
	case 2: case 3: case 7: return 4;
	default: return 8;
	}
}

int ncclGetVersion(int *v) { *v = FAKE_VERSION; return 0; }

int ncclGetUniqueId(ncclUniqueId *id) {
	memset(id, 0, sizeof *id);
	strcpy(id->internal, "fake-unique-id");
	flog("getUniqueId");
	return 0;
}

static fake_comm *newcomm(int nranks, ncclUniqueId id, int rank) {
	fake_comm *c = calloc(1, sizeof *c); // never freed: an aborted init may still read it
	c->nranks = nranks;
	c->rank = rank;
	c->mode = id.internal[0];
	return c;
}

// peers never arrive in a multi-rank world, nor in 'H' mode.
static int hangs(fake_comm *c) { return c->nranks > 1 || c->mode == 'H'; }

int ncclCommInitRank(void **comm, int nranks, ncclUniqueId id, int rank) {
	flog("initRank nranks=%d rank=%d", nranks, rank);
	fake_comm *c = newcomm(nranks, id, rank);
	*comm = c; // published before the wait, as NCCL does
	while (hangs(c) && !c->aborted) usleep(100);
	return c->aborted ? 2 : 0; // ncclSystemError after an abort
}

#ifdef FAKE_CONFIG
int ncclCommInitRankConfig(void **comm, int nranks, ncclUniqueId id, int rank, fake_config *cfg) {
	if (cfg->size != 24 || cfg->magic != 0xcafebeef || cfg->version != 21400 || cfg->blocking != 0) {
		flog("initRankConfig bad config size=%zu magic=%x version=%u blocking=%d", cfg->size, cfg->magic, cfg->version, cfg->blocking);
		return 4;
	}
	flog("initRankConfig nranks=%d rank=%d blocking=%d", nranks, rank, cfg->blocking);
	fake_comm *c = newcomm(nranks, id, rank);
	c->nonblocking = 1;
	c->pending = hangs(c) ? -1 : 2;
	*comm = c;
	return 7; // ncclInProgress
}

const char *ncclGetLastError(void *comm) {
	static __thread char buf[64];
	snprintf(buf, sizeof buf, "fake last error on rank %d", comm ? ((fake_comm *)comm)->rank : -1);
	return buf;
}
#endif

int ncclCommDestroy(void *comm) { flog("destroy rank=%d", ((fake_comm *)comm)->rank); return 0; }

int ncclCommAbort(void *comm) {
	fake_comm *c = comm;
	flog("abort rank=%d", c->rank);
	c->aborted = 1;
	return 0;
}

int ncclCommGetAsyncError(void *comm, int *state) {
	fake_comm *c = comm;
	if (c->aborted) { *state = 2; return 0; }
	if (c->pending != 0) {
		if (c->pending > 0) c->pending--;
		*state = 7;
		return 0;
	}
	*state = (c->mode == 'E' && c->ops > 0 && c->quiet++ > 0) ? 6 : 0;
	return 0;
}

const char *ncclGetErrorString(int r) {
	static const char *s[] = {"no error", "unhandled cuda error", "unhandled system error", "internal error",
		"invalid argument", "invalid usage", "remote error", "operation in progress"};
	return (r >= 0 && r < 8) ? s[r] : "unknown result";
}

// done finishes an enqueue: nonblocking comms report it in progress once.
static int done(fake_comm *c) {
	c->ops++;
	if (c->nonblocking) { c->pending = 1; return 7; }
	return 0;
}

#ifndef FAKE_BROKEN
int ncclAllReduce(const void *s, void *r, size_t n, int dt, int op, void *comm, void *stream) {
	fake_comm *c = comm;
	flog("allReduce count=%zu dt=%d op=%d stream=%p", n, dt, op, stream);
	if (n == 999) return 4;
	if (n == 666) return 6;
	if (n == 777) { // a collective waiting for a peer that never comes
		while (!c->aborted) usleep(100);
		return 2;
	}
	if (c->nranks == 1) memmove(r, s, n * dtsize(dt));
	return done(c);
}
#endif

int ncclAllGather(const void *s, void *r, size_t n, int dt, void *comm, void *stream) {
	fake_comm *c = comm;
	flog("allGather count=%zu dt=%d", n, dt);
	if (c->nranks == 1) memmove(r, s, n * dtsize(dt));
	return done(c);
}

int ncclBroadcast(const void *s, void *r, size_t n, int dt, int root, void *comm, void *stream) {
	fake_comm *c = comm;
	flog("broadcast count=%zu dt=%d root=%d", n, dt, root);
	if (c->nranks == 1) memmove(r, s, n * dtsize(dt));
	return done(c);
}

int ncclReduceScatter(const void *s, void *r, size_t n, int dt, int op, void *comm, void *stream) {
	fake_comm *c = comm;
	flog("reduceScatter count=%zu dt=%d op=%d", n, dt, op);
	if (c->nranks == 1) memmove(r, s, n * dtsize(dt));
	return done(c);
}

// A one-rank group pairs its send to self with its receive from self.
static __thread const void *gsend;
static __thread void *grecv;
static __thread size_t gbytes;
static __thread fake_comm *gcomm;
static __thread int gdepth;

int ncclGroupStart(void) { flog("groupStart"); gdepth++; return 0; }

int ncclSend(const void *s, size_t n, int dt, int peer, void *comm, void *stream) {
	flog("send count=%zu dt=%d peer=%d", n, dt, peer);
	if (gdepth == 0) return 5;
	gsend = s; gbytes = n * dtsize(dt); gcomm = comm;
	return 0;
}

int ncclRecv(void *r, size_t n, int dt, int peer, void *comm, void *stream) {
	flog("recv count=%zu dt=%d peer=%d", n, dt, peer);
	if (gdepth == 0) return 5;
	grecv = r; gcomm = comm;
	return 0;
}

int ncclGroupEnd(void) {
	flog("groupEnd");
	if (--gdepth > 0) return 0;
	if (gsend && grecv) memmove(grecv, gsend, gbytes);
	gsend = NULL; grecv = NULL;
	return gcomm ? done(gcomm) : 0;
}
