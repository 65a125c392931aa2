// fakenccl: a test double of NCCL for Gorovod, built as libnccl.so.2 and
// linked against fakecudart.c's libcudart.so.12. It implements the NCCL API
// the nccl package's shim uses, on host memory, with communicators that span
// processes: the ranks of a communicator share a POSIX shared-memory
// segment named from the unique id, so reductions are real and results can
// be checked element by element. Collectives run on the stream they were
// given (fakecudart's worker threads), so a caller must synchronise the
// stream before reading results, as with a GPU.
//
// Data types: every ncclDataType_t (int8, uint8, int32, uint32, int64,
// uint64, half, float, double, bfloat16). Operators: sum, prod, max, min and
// (FAKE_VERSION >= 21000) avg. Reductions combine the ranks' values in rank
// order, so every rank gets bit-identical results.
//
// Failure behaviour, as NCCL's: when a rank aborts or destroys its
// communicator, or its process dies, the peers' pending collectives stop,
// ncclCommGetAsyncError reports ncclRemoteError (ncclSystemError for a dead
// process) and ncclGetLastError names the rank; their streams stay busy
// until the communicator is aborted.
//
// Fault switches (environment, read at communicator init):
//   FAKENCCL_FAULT=kind:rank:op[,kind:rank:op...]
//     kind  error  the op-th collective on communicator rank `rank` fails
//                  asynchronously (ncclSystemError via ncclCommGetAsyncError)
//                  and its stream stays busy until the communicator is aborted
//           hang   that collective never completes (until aborted)
//           exit   the process exits (status 3) when that collective starts
//     op counts the collectives (a group counts once) of the communicator
//     from 1. FAKENCCL_FAULT_NCOMM=n applies the faults only to the n-th
//     communicator a process makes (from 1; default every one).
//   FAKENCCL_CHUNK  bytes exchanged per step (default 1 MiB).
//   FAKE_NCCL_LOG   a file every call is appended to, one line each.
//
// Legacy switches for the binding's unit tests (one-rank communicators):
// unique id byte 0 'H' (init never completes) or 'E' (async error after the
// first collective); allreduce counts 999 (ncclInvalidArgument), 666
// (ncclRemoteError), 777 (blocks inside the call until aborted).
//
// Compile-time: FAKE_VERSION (ncclGetVersion's code), FAKE_CONFIG (exports
// ncclCommInitRankConfig and ncclGetLastError, as 2.14+ does), FAKE_BROKEN
// (omits ncclAllReduce).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef FAKE_VERSION
#define FAKE_VERSION 21803
#endif

typedef struct { char internal[128]; } ncclUniqueId;

enum {
	ncclSuccess = 0, ncclUnhandledCudaError = 1, ncclSystemError = 2, ncclInternalError = 3,
	ncclInvalidArgument = 4, ncclInvalidUsage = 5, ncclRemoteError = 6, ncclInProgress = 7,
};

// fakecuda_enqueue comes from the libcudart.so.12 next to this library,
// opened by path: a soname lookup could find another copy of the double
// loaded in the same process (the binding's tests load several variants).
static int (*enqueue_fn)(void *stream, void (*fn)(void *), void *arg);
static pthread_once_t enqueue_once = PTHREAD_ONCE_INIT;

static void resolve_enqueue(void) {
	Dl_info info;
	if (!dladdr((void *)resolve_enqueue, &info) || info.dli_fname == NULL) return;
	char path[4096];
	snprintf(path, sizeof path, "%s", info.dli_fname);
	char *slash = strrchr(path, '/');
	if (slash) slash[1] = 0; else path[0] = 0;
	strncat(path, "libcudart.so.12", sizeof path - strlen(path) - 1);
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h) enqueue_fn = (int (*)(void *, void (*)(void *), void *))dlsym(h, "fakecuda_enqueue");
}

static int fakecuda_enqueue(void *stream, void (*fn)(void *), void *arg) {
	pthread_once(&enqueue_once, resolve_enqueue);
	return enqueue_fn ? enqueue_fn(stream, fn, arg) : 1;
}

#define MAXR 64
#define SEG_MAGIC 0x46414b454e43434cULL

// The shared segment: this header, then one slot of `chunk` bytes per rank
// (collectives), then one mailbox of `chunk` bytes per (sender, receiver)
// pair (ncclSend/ncclRecv).
typedef struct {
	uint64_t magic;
	int32_t nranks;
	int32_t joined;
	uint64_t chunk;
	int32_t pid[MAXR];
	int32_t gone[MAXR]; // 1 aborted, 2 destroyed
	uint64_t arrive;    // barrier arrivals, monotonic
	uint64_t sent[MAXR][MAXR], taken[MAXR][MAXR];
	uint64_t len[MAXR][MAXR];
	int32_t culprit; // 1 + the first rank that failed, 0 while none has
	char why[160];   // what happened to it
} seg_hdr;

typedef struct {
	int nranks, rank, mode, nonblocking;
	int pending; // polls before a nonblocking operation reports done; -1: init waiting for peers
	int ops;     // collectives enqueued
	int ran;     // collectives started on the stream
	int quiet;
	volatile int aborted;
	volatile int async; // ncclResult_t reported by ncclCommGetAsyncError
	char lasterr[256];
	char shmname[64];
	seg_hdr *seg;
	size_t seglen;
	uint64_t bars; // barriers passed
	int fault_kind, fault_op;
	struct timespec lastcheck;
} fake_comm;

static void flog(const char *fmt, ...) {
	const char *path = getenv("FAKE_NCCL_LOG");
	if (path == NULL || path[0] == 0) return;
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line - 1, fmt, ap);
	va_end(ap);
	if (n < 0) return;
	if (n > (int)sizeof line - 2) n = sizeof line - 2;
	line[n++] = '\n';
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
	if (fd < 0) return;
	ssize_t w = write(fd, line, n); // one write: lines from several processes do not interleave
	(void)w;
	close(fd);
}

static size_t dtsize(int dt) {
	switch (dt) {
	case 0: case 1: return 1;
	case 6: case 9: return 2;
	case 2: case 3: case 7: return 4;
	default: return 8;
	}
}

static int dtvalid(int dt) { return dt >= 0 && dt <= (FAKE_VERSION >= 21000 ? 9 : 8); }
static int opvalid(int op) { return op >= 0 && op <= (FAKE_VERSION >= 21000 ? 4 : 3); }

int ncclGetVersion(int *v) { *v = FAKE_VERSION; return ncclSuccess; }

int ncclGetUniqueId(ncclUniqueId *id) {
	memset(id, 0, sizeof *id);
	strcpy(id->internal, "fake-unique-id");
	int fd = open("/dev/urandom", O_RDONLY);
	if (fd < 0 || read(fd, id->internal + 16, 16) != 16) {
		if (fd >= 0) close(fd);
		return ncclSystemError;
	}
	close(fd);
	flog("getUniqueId");
	return ncclSuccess;
}

const char *ncclGetErrorString(int r) {
	static const char *s[] = {"no error", "unhandled cuda error", "unhandled system error", "internal error",
		"invalid argument", "invalid usage", "remote error", "operation in progress"};
	return (r >= 0 && r < 8) ? s[r] : "unknown result";
}

// ---- faults and waiting ---------------------------------------------------

static int comms_made;

static void read_faults(fake_comm *c) {
	const char *only = getenv("FAKENCCL_FAULT_NCOMM");
	if (only && *only && atoi(only) != comms_made) return;
	const char *f = getenv("FAKENCCL_FAULT");
	if (f == NULL) return;
	char buf[256];
	snprintf(buf, sizeof buf, "%s", f);
	for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char kind[16];
		int rank, op;
		if (sscanf(tok, "%15[a-z]:%d:%d", kind, &rank, &op) != 3 || rank != c->rank) continue;
		c->fault_op = op;
		c->fault_kind = strcmp(kind, "error") == 0 ? 'e' : strcmp(kind, "hang") == 0 ? 'h' : strcmp(kind, "exit") == 0 ? 'x' : 0;
	}
}

static int pid_dead(int pid) {
	if (pid <= 0) return 0;
	if (kill(pid, 0) != 0 && errno == ESRCH) return 1;
	char path[64], buf[256];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	int fd = open(path, O_RDONLY);
	if (fd < 0) return 1;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0) return 1;
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	return p && (p[2] == 'Z' || p[2] == 'X'); // a zombie has exited
}

// blame records the first failure of the communicator in the segment, so
// that ranks failing in cascade still name the rank where it started.
static void blame(fake_comm *c, int rank, const char *why) {
	if (c->seg == NULL) return;
	int32_t none = 0;
	if (__atomic_compare_exchange_n(&c->seg->culprit, &none, -1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		snprintf(c->seg->why, sizeof c->seg->why, "%s", why);
		__atomic_store_n(&c->seg->culprit, rank + 1, __ATOMIC_RELEASE);
	}
}

// first names the first failure if it was not peer's own.
static void first(fake_comm *c, int peer, char *buf, size_t n) {
	buf[0] = 0;
	int32_t k = __atomic_load_n(&c->seg->culprit, __ATOMIC_ACQUIRE);
	if (k > 0 && k - 1 != peer) snprintf(buf, n, "; first failure: rank %d: %s", k - 1, c->seg->why);
}

static void fail(fake_comm *c, int code, const char *fmt, ...) {
	if (c->async != ncclSuccess) return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->lasterr, sizeof c->lasterr, fmt, ap);
	va_end(ap);
	__atomic_store_n(&c->async, code, __ATOMIC_RELEASE);
	flog("asyncError rank=%d code=%d: %s", c->rank, code, c->lasterr);
}

// check looks for lost peers among those need marks (all when NULL); it
// returns nonzero when the caller must stop waiting (the communicator is
// aborted, or it failed).
static int check(fake_comm *c, const char *need) {
	if (c->aborted) return 1;
	if (c->async != ncclSuccess) return 1;
	if (c->seg == NULL) return 0;
	char also[200];
	for (int r = 0; r < c->nranks; r++) {
		if (r == c->rank || (need && !need[r])) continue;
		int g = __atomic_load_n(&c->seg->gone[r], __ATOMIC_ACQUIRE);
		if (g) {
			first(c, r, also, sizeof also);
			fail(c, ncclRemoteError, "fakenccl: rank %d %s its communicator%s", r, g == 1 ? "aborted" : "destroyed", also);
			return 1;
		}
	}
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	long ms = (now.tv_sec - c->lastcheck.tv_sec) * 1000 + (now.tv_nsec - c->lastcheck.tv_nsec) / 1000000;
	if (ms < 20) return 0;
	c->lastcheck = now;
	for (int r = 0; r < c->nranks; r++) {
		if (r == c->rank || (need && !need[r])) continue;
		int pid = __atomic_load_n(&c->seg->pid[r], __ATOMIC_ACQUIRE);
		if (pid_dead(pid)) {
			char why[64];
			snprintf(why, sizeof why, "process %d is gone", pid);
			blame(c, r, why);
			fail(c, ncclSystemError, "fakenccl: rank %d (pid %d) is gone", r, pid);
			return 1;
		}
	}
	return 0;
}

static void pause_briefly(int *spins) {
	if ((*spins)++ < 100) {
		sched_yield();
		return;
	}
	usleep(*spins < 2000 ? 20 : 200);
}

// park keeps a failed collective's stream busy until the communicator is
// aborted, as a kernel waiting on a lost peer does.
static void park(fake_comm *c) {
	int spins = 0;
	while (!c->aborted) pause_briefly(&spins);
}

// barrier waits until every rank has arrived; nonzero when it gave up.
static int barrier(fake_comm *c) {
	c->bars++;
	uint64_t target = c->bars * (uint64_t)c->nranks;
	__atomic_add_fetch(&c->seg->arrive, 1, __ATOMIC_ACQ_REL);
	int spins = 0;
	while (__atomic_load_n(&c->seg->arrive, __ATOMIC_ACQUIRE) < target) {
		if (check(c, NULL)) return 1;
		pause_briefly(&spins);
	}
	return 0;
}

// ---- reductions -------------------------------------------------------------

static float h2f(uint16_t h) {
	uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
	if (e == 0) {
		if (m == 0) {
			bits = s;
		} else { // subnormal
			e = 127 - 15 + 1;
			while ((m & 0x400) == 0) { m <<= 1; e--; }
			bits = s | (e << 23) | ((m & 0x3ff) << 13);
		}
	} else if (e == 31) {
		bits = s | 0x7f800000u | (m << 13);
	} else {
		bits = s | ((e + 127 - 15) << 23) | (m << 13);
	}
	float f;
	memcpy(&f, &bits, 4);
	return f;
}

static uint16_t f2h(float f) {
	uint32_t x;
	memcpy(&x, &f, 4);
	uint32_t s = (x >> 16) & 0x8000;
	int e = (int)((x >> 23) & 0xff) - 127 + 15;
	uint32_t m = x & 0x7fffff;
	if (((x >> 23) & 0xff) == 0xff) return s | 0x7c00 | (m ? 0x200 : 0);
	if (e >= 31) return s | 0x7c00;
	if (e <= 0) {
		if (e < -10) return s;
		m |= 0x800000;
		int shift = 14 - e;
		uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
		if (rem > half || (rem == half && (r & 1))) r++;
		return s | r;
	}
	uint32_t r = (e << 10) | (m >> 13), rem = m & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++; // may carry into the exponent: still right
	return s | r;
}

static float b2f(uint16_t b) {
	uint32_t x = (uint32_t)b << 16;
	float f;
	memcpy(&f, &x, 4);
	return f;
}

static uint16_t f2b(float f) {
	uint32_t x;
	memcpy(&x, &f, 4);
	if ((x & 0x7fffffff) > 0x7f800000) return (x >> 16) | 0x40;
	return (x + 0x7fff + ((x >> 16) & 1)) >> 16;
}

static int isfloat(int dt) { return dt >= 6; }
static int issigned(int dt) { return dt == 0 || dt == 2 || dt == 4; }

static double loadf(const void *p, size_t i, int dt) {
	switch (dt) {
	case 6: return h2f(((const uint16_t *)p)[i]);
	case 9: return b2f(((const uint16_t *)p)[i]);
	case 7: return ((const float *)p)[i];
	default: return ((const double *)p)[i];
	}
}

static void storef(void *p, size_t i, int dt, double v) {
	switch (dt) {
	case 6: ((uint16_t *)p)[i] = f2h((float)v); break;
	case 9: ((uint16_t *)p)[i] = f2b((float)v); break;
	case 7: ((float *)p)[i] = (float)v; break;
	default: ((double *)p)[i] = v;
	}
}

static uint64_t loadi(const void *p, size_t i, int dt) {
	switch (dt) {
	case 0: return (uint64_t)(int64_t)((const int8_t *)p)[i];
	case 1: return ((const uint8_t *)p)[i];
	case 2: return (uint64_t)(int64_t)((const int32_t *)p)[i];
	case 3: return ((const uint32_t *)p)[i];
	default: return ((const uint64_t *)p)[i];
	}
}

static void storei(void *p, size_t i, int dt, uint64_t v) {
	switch (dt) {
	case 0: ((int8_t *)p)[i] = (int8_t)v; break;
	case 1: ((uint8_t *)p)[i] = (uint8_t)v; break;
	case 2: ((int32_t *)p)[i] = (int32_t)v; break;
	case 3: ((uint32_t *)p)[i] = (uint32_t)v; break;
	default: ((uint64_t *)p)[i] = v;
	}
}

// combine folds src into acc (both n elements of dt); avg sums.
static void combine(void *acc, const void *src, size_t n, int dt, int op) {
	for (size_t i = 0; i < n; i++) {
		if (isfloat(dt)) {
			double a = loadf(acc, i, dt), b = loadf(src, i, dt), r;
			switch (op) {
			case 1: r = a * b; break;
			case 2: r = a > b ? a : b; break;
			case 3: r = a < b ? a : b; break;
			default: r = a + b;
			}
			storef(acc, i, dt, r);
			continue;
		}
		uint64_t a = loadi(acc, i, dt), b = loadi(src, i, dt), r;
		int lt = issigned(dt) ? (int64_t)a < (int64_t)b : a < b;
		switch (op) {
		case 1: r = a * b; break;
		case 2: r = lt ? b : a; break;
		case 3: r = lt ? a : b; break;
		default: r = a + b;
		}
		storei(acc, i, dt, r);
	}
}

static void divide(void *acc, size_t n, int dt, int by) {
	for (size_t i = 0; i < n; i++) {
		if (isfloat(dt)) {
			storef(acc, i, dt, loadf(acc, i, dt) / by);
		} else if (issigned(dt)) {
			storei(acc, i, dt, (uint64_t)((int64_t)loadi(acc, i, dt) / by));
		} else {
			storei(acc, i, dt, loadi(acc, i, dt) / (uint64_t)by);
		}
	}
}

// ---- communicators ----------------------------------------------------------

static size_t chunk_bytes(void) {
	const char *s = getenv("FAKENCCL_CHUNK");
	size_t n = (s && *s) ? strtoull(s, NULL, 10) : (1u << 20);
	return n < 64 ? 64 : n & ~(size_t)7;
}

static char *slot(fake_comm *c, int r) { return (char *)c->seg + sizeof(seg_hdr) + (size_t)r * c->seg->chunk; }
static char *mailbox(fake_comm *c, int src, int dst) {
	return (char *)c->seg + sizeof(seg_hdr) + (size_t)(c->nranks + src * c->nranks + dst) * c->seg->chunk;
}

// attach maps the communicator's segment (creating it if first) and
// registers this rank. 0 on success.
static int attach(fake_comm *c, const ncclUniqueId *id) {
	char *p = c->shmname + sprintf(c->shmname, "/fakenccl-");
	for (int i = 16; i < 32; i++) p += sprintf(p, "%02x", (unsigned char)id->internal[i]);
	size_t chunk = chunk_bytes();
	c->seglen = sizeof(seg_hdr) + (size_t)(c->nranks + c->nranks * c->nranks) * chunk;
	int fd = shm_open(c->shmname, O_RDWR | O_CREAT | O_EXCL, 0600);
	int creator = fd >= 0;
	if (!creator) {
		int spins = 0;
		while ((fd = shm_open(c->shmname, O_RDWR, 0600)) < 0) { // a creator mid-way, or unlinked already
			if (c->aborted || errno != ENOENT) return -1;
			pause_briefly(&spins);
		}
		struct stat st;
		while (fstat(fd, &st) == 0 && (size_t)st.st_size < c->seglen) {
			if (c->aborted) { close(fd); return -1; }
			pause_briefly(&spins);
		}
	} else if (ftruncate(fd, c->seglen) != 0) {
		close(fd);
		return -1;
	}
	void *m = mmap(NULL, c->seglen, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED) return -1;
	c->seg = m;
	if (creator) {
		c->seg->nranks = c->nranks;
		c->seg->chunk = chunk;
		__atomic_store_n(&c->seg->magic, SEG_MAGIC, __ATOMIC_RELEASE);
	}
	int spins = 0;
	while (__atomic_load_n(&c->seg->magic, __ATOMIC_ACQUIRE) != SEG_MAGIC) {
		if (c->aborted) return -1;
		pause_briefly(&spins);
	}
	if (c->seg->nranks != c->nranks || c->seg->chunk != chunk) return -1;
	__atomic_store_n(&c->seg->pid[c->rank], getpid(), __ATOMIC_RELEASE);
	__atomic_add_fetch(&c->seg->joined, 1, __ATOMIC_ACQ_REL);
	return 0;
}

static int joined_all(fake_comm *c) {
	if (c->seg == NULL) return 1;
	if (__atomic_load_n(&c->seg->joined, __ATOMIC_ACQUIRE) < c->nranks) return 0;
	shm_unlink(c->shmname); // everyone has it mapped; ENOENT after the first
	return 1;
}

static fake_comm *newcomm(int nranks, const ncclUniqueId *id, int rank) {
	fake_comm *c = calloc(1, sizeof *c); // never freed: an aborted init or a parked stream may still read it
	c->nranks = nranks;
	c->rank = rank;
	c->mode = id->internal[0];
	comms_made++;
	read_faults(c);
	clock_gettime(CLOCK_MONOTONIC, &c->lastcheck);
	return c;
}

static int hangs(fake_comm *c) { return c->mode == 'H'; }

static int validate(int nranks, int rank) {
	return nranks < 1 || nranks > MAXR || rank < 0 || rank >= nranks ? ncclInvalidArgument : ncclSuccess;
}

int ncclCommInitRank(void **comm, int nranks, ncclUniqueId id, int rank) {
	flog("initRank nranks=%d rank=%d", nranks, rank);
	if (validate(nranks, rank) != ncclSuccess) return ncclInvalidArgument;
	fake_comm *c = newcomm(nranks, &id, rank);
	*comm = c; // published before the wait, as NCCL does
	if (nranks > 1 && attach(c, &id) != 0) {
		shm_unlink(c->shmname);
		return ncclSystemError;
	}
	int spins = 0;
	while ((hangs(c) || !joined_all(c)) && !c->aborted) pause_briefly(&spins);
	if (c->aborted) shm_unlink(c->shmname);
	return c->aborted ? ncclSystemError : ncclSuccess;
}

#ifdef FAKE_CONFIG
typedef struct {
	size_t size;
	unsigned int magic, version;
	int blocking;
} fake_config;

int ncclCommInitRankConfig(void **comm, int nranks, ncclUniqueId id, int rank, fake_config *cfg) {
	if (cfg->size != 24 || cfg->magic != 0xcafebeef || cfg->version != 21400 || cfg->blocking != 0) {
		flog("initRankConfig bad config size=%zu magic=%x version=%u blocking=%d", cfg->size, cfg->magic, cfg->version, cfg->blocking);
		return ncclInvalidArgument;
	}
	flog("initRankConfig nranks=%d rank=%d blocking=%d", nranks, rank, cfg->blocking);
	if (validate(nranks, rank) != ncclSuccess) return ncclInvalidArgument;
	fake_comm *c = newcomm(nranks, &id, rank);
	c->nonblocking = 1;
	// The segment is joined here; the wait for the peers happens in the
	// ncclCommGetAsyncError polls.
	if (nranks > 1 && attach(c, &id) != 0) return ncclSystemError;
	c->pending = (hangs(c) || nranks > 1) ? -1 : 2;
	*comm = c;
	return ncclInProgress;
}

const char *ncclGetLastError(void *comm) {
	static __thread char buf[300];
	fake_comm *c = comm;
	if (c && c->lasterr[0]) snprintf(buf, sizeof buf, "%s", c->lasterr);
	else snprintf(buf, sizeof buf, "fake last error on rank %d", c ? c->rank : -1);
	return buf;
}
#endif

static void mark_gone(fake_comm *c, int how) {
	if (c->seg) __atomic_store_n(&c->seg->gone[c->rank], how, __ATOMIC_RELEASE);
}

int ncclCommDestroy(void *comm) {
	fake_comm *c = comm;
	flog("destroy rank=%d", c->rank);
	mark_gone(c, 2);
	return ncclSuccess;
}

int ncclCommAbort(void *comm) {
	fake_comm *c = comm;
	flog("abort rank=%d", c->rank);
	if (c->async == ncclSuccess) blame(c, c->rank, "aborted its communicator");
	c->aborted = 1;
	mark_gone(c, 1);
	if (c->shmname[0]) shm_unlink(c->shmname);
	return ncclSuccess;
}

int ncclCommCount(void *comm, int *n) { *n = ((fake_comm *)comm)->nranks; return ncclSuccess; }
int ncclCommUserRank(void *comm, int *r) { *r = ((fake_comm *)comm)->rank; return ncclSuccess; }

int ncclCommGetAsyncError(void *comm, int *state) {
	fake_comm *c = comm;
	if (c->aborted) { *state = ncclSystemError; return ncclSuccess; }
	if (c->pending == -1) {
		if (!hangs(c) && joined_all(c)) c->pending = 0;
		*state = c->pending ? ncclInProgress : ncclSuccess;
		return ncclSuccess;
	}
	if (c->pending > 0) {
		c->pending--;
		*state = ncclInProgress;
		return ncclSuccess;
	}
	if (c->async != ncclSuccess) { *state = c->async; return ncclSuccess; }
	*state = (c->mode == 'E' && c->ops > 0 && c->quiet++ > 0) ? ncclRemoteError : c->async;
	return ncclSuccess;
}

// ---- collectives --------------------------------------------------------------

enum { OP_ALLREDUCE, OP_ALLGATHER, OP_BROADCAST, OP_REDUCESCATTER, OP_GROUP };

typedef struct { int send, peer; char *ptr; size_t bytes; } p2p_op;

typedef struct {
	int kind;
	fake_comm *c;
	const char *send;
	char *recv;
	size_t count;
	int dt, op, root;
	int np;
	p2p_op *ps;
} coll;

static void run_allreduce(coll *a) {
	fake_comm *c = a->c;
	size_t es = dtsize(a->dt), per = c->seg->chunk / es;
	int op = a->op == 4 ? 0 : a->op;
	for (size_t o = 0; o < a->count; o += per) {
		size_t m = a->count - o < per ? a->count - o : per;
		memcpy(slot(c, c->rank), a->send + o * es, m * es);
		if (barrier(c)) return;
		char *acc = a->recv + o * es;
		memcpy(acc, slot(c, 0), m * es);
		for (int r = 1; r < c->nranks; r++) combine(acc, slot(c, r), m, a->dt, op);
		if (a->op == 4) divide(acc, m, a->dt, c->nranks);
		if (barrier(c)) return;
	}
}

static void run_allgather(coll *a) {
	fake_comm *c = a->c;
	size_t es = dtsize(a->dt), per = c->seg->chunk / es;
	for (size_t o = 0; o < a->count; o += per) {
		size_t m = a->count - o < per ? a->count - o : per;
		memcpy(slot(c, c->rank), a->send + o * es, m * es);
		if (barrier(c)) return;
		for (int r = 0; r < c->nranks; r++) memcpy(a->recv + (r * a->count + o) * es, slot(c, r), m * es);
		if (barrier(c)) return;
	}
}

static void run_broadcast(coll *a) {
	fake_comm *c = a->c;
	size_t es = dtsize(a->dt), per = c->seg->chunk / es;
	for (size_t o = 0; o < a->count; o += per) {
		size_t m = a->count - o < per ? a->count - o : per;
		if (c->rank == a->root) memcpy(slot(c, a->root), a->send + o * es, m * es);
		if (barrier(c)) return;
		memmove(a->recv + o * es, slot(c, a->root), m * es);
		if (barrier(c)) return;
	}
}

static void run_reducescatter(coll *a) {
	fake_comm *c = a->c;
	size_t es = dtsize(a->dt), per = c->seg->chunk / es / c->nranks;
	int op = a->op == 4 ? 0 : a->op;
	char *tmp = malloc(per * es);
	for (size_t o = 0; o < a->count; o += per) {
		size_t m = a->count - o < per ? a->count - o : per;
		for (int j = 0; j < c->nranks; j++) memcpy(slot(c, c->rank) + j * m * es, a->send + (j * a->count + o) * es, m * es);
		if (barrier(c)) break;
		memcpy(tmp, slot(c, 0) + c->rank * m * es, m * es);
		for (int r = 1; r < c->nranks; r++) combine(tmp, slot(c, r) + c->rank * m * es, m, a->dt, op);
		if (a->op == 4) divide(tmp, m, a->dt, c->nranks);
		memcpy(a->recv + o * es, tmp, m * es);
		if (barrier(c)) break;
	}
	free(tmp);
}

// run_group moves every send and receive of a group through the pair
// mailboxes, progressing whichever can move, so that any order of sends
// and receives across ranks completes.
static void run_group(coll *a) {
	fake_comm *c = a->c;
	size_t chunk = c->seg->chunk;
	size_t *done = calloc(a->np ? a->np : 1, sizeof *done);
	char need[MAXR];
	int spins = 0;
	for (;;) {
		int left = 0, moved = 0;
		memset(need, 0, sizeof need);
		for (int i = 0; i < a->np; i++) {
			p2p_op *p = &a->ps[i];
			if (done[i] >= p->bytes) continue;
			left = 1;
			need[p->peer] = 1;
			int src = p->send ? c->rank : p->peer, dst = p->send ? p->peer : c->rank;
			uint64_t *sent = &c->seg->sent[src][dst], *taken = &c->seg->taken[src][dst];
			if (p->send) {
				if (__atomic_load_n(sent, __ATOMIC_ACQUIRE) != __atomic_load_n(taken, __ATOMIC_ACQUIRE)) continue;
				size_t m = p->bytes - done[i] < chunk ? p->bytes - done[i] : chunk;
				memcpy(mailbox(c, src, dst), p->ptr + done[i], m);
				c->seg->len[src][dst] = m;
				__atomic_add_fetch(sent, 1, __ATOMIC_ACQ_REL);
				done[i] += m;
			} else {
				if (__atomic_load_n(sent, __ATOMIC_ACQUIRE) == __atomic_load_n(taken, __ATOMIC_ACQUIRE)) continue;
				size_t m = c->seg->len[src][dst];
				if (m > p->bytes - done[i]) m = p->bytes - done[i];
				memcpy(p->ptr + done[i], mailbox(c, src, dst), m);
				__atomic_add_fetch(taken, 1, __ATOMIC_ACQ_REL);
				done[i] += m;
			}
			moved = 1;
		}
		if (!left) break;
		if (moved) { spins = 0; continue; }
		if (check(c, need)) break; // only the peers still owed data matter: others may be done and gone
		pause_briefly(&spins);
	}
	free(done);
}

// local runs a collective of a one-rank communicator.
static void run_local(coll *a) {
	size_t es = dtsize(a->dt);
	switch (a->kind) {
	case OP_GROUP:
		for (int i = 0; i < a->np; i++) {
			if (!a->ps[i].send) continue;
			for (int j = 0; j < a->np; j++) {
				if (!a->ps[j].send) { memmove(a->ps[j].ptr, a->ps[i].ptr, a->ps[i].bytes); break; }
			}
		}
		break;
	default:
		memmove(a->recv, a->send, a->count * es);
	}
}

static void run(void *p) {
	coll *a = p;
	fake_comm *c = a->c;
	int n = __atomic_add_fetch(&c->ran, 1, __ATOMIC_ACQ_REL);
	if (c->aborted || c->async != ncclSuccess) {
		park(c);
		goto out;
	}
	if (n == c->fault_op && c->fault_kind) {
		flog("fault %c rank=%d op=%d", c->fault_kind, c->rank, n);
		if (c->fault_kind == 'x') _exit(3);
		if (c->fault_kind == 'e') {
			fail(c, ncclSystemError, "fakenccl: injected async error on rank %d at collective %d", c->rank, n);
			blame(c, c->rank, "injected async error");
		}
		park(c);
		goto out;
	}
	if (c->seg == NULL) {
		run_local(a);
		goto out;
	}
	switch (a->kind) {
	case OP_ALLREDUCE: run_allreduce(a); break;
	case OP_ALLGATHER: run_allgather(a); break;
	case OP_BROADCAST: run_broadcast(a); break;
	case OP_REDUCESCATTER: run_reducescatter(a); break;
	case OP_GROUP: run_group(a); break;
	}
	if (c->async != ncclSuccess || c->aborted) park(c);
out:
	free(a->ps);
	free(a);
}

// submit queues a collective on its stream; nonblocking communicators
// report it in progress once.
static int submit(coll *a, void *stream) {
	fake_comm *c = a->c;
	if (c->aborted) { free(a->ps); free(a); return ncclSystemError; }
	c->ops++;
	if (fakecuda_enqueue(stream, run, a) != 0) {
		free(a->ps);
		free(a);
		return ncclUnhandledCudaError;
	}
	if (c->nonblocking) { c->pending = 1; return ncclInProgress; }
	return ncclSuccess;
}

static coll *newcoll(int kind, void *comm, const void *s, void *r, size_t n, int dt, int op, int root) {
	coll *a = calloc(1, sizeof *a);
	a->kind = kind;
	a->c = comm;
	a->send = s;
	a->recv = r;
	a->count = n;
	a->dt = dt;
	a->op = op;
	a->root = root;
	return a;
}

#ifndef FAKE_BROKEN
int ncclAllReduce(const void *s, void *r, size_t n, int dt, int op, void *comm, void *stream) {
	fake_comm *c = comm;
	flog("allReduce count=%zu dt=%d op=%d stream=%p rank=%d", n, dt, op, stream, c->rank);
	if (n == 999) return ncclInvalidArgument;
	if (n == 666) return ncclRemoteError;
	if (n == 777) { // a collective waiting for a peer that never comes
		park(c);
		return ncclSystemError;
	}
	if (!dtvalid(dt) || !opvalid(op)) return ncclInvalidArgument;
	return submit(newcoll(OP_ALLREDUCE, comm, s, r, n, dt, op, 0), stream);
}
#endif

int ncclAllGather(const void *s, void *r, size_t n, int dt, void *comm, void *stream) {
	flog("allGather count=%zu dt=%d rank=%d", n, dt, ((fake_comm *)comm)->rank);
	if (!dtvalid(dt)) return ncclInvalidArgument;
	return submit(newcoll(OP_ALLGATHER, comm, s, r, n, dt, 0, 0), stream);
}

int ncclBroadcast(const void *s, void *r, size_t n, int dt, int root, void *comm, void *stream) {
	fake_comm *c = comm;
	flog("broadcast count=%zu dt=%d root=%d rank=%d", n, dt, root, c->rank);
	if (!dtvalid(dt) || root < 0 || root >= c->nranks) return ncclInvalidArgument;
	return submit(newcoll(OP_BROADCAST, comm, s, r, n, dt, 0, root), stream);
}

int ncclReduceScatter(const void *s, void *r, size_t n, int dt, int op, void *comm, void *stream) {
	flog("reduceScatter count=%zu dt=%d op=%d rank=%d", n, dt, op, ((fake_comm *)comm)->rank);
	if (!dtvalid(dt) || !opvalid(op)) return ncclInvalidArgument;
	return submit(newcoll(OP_REDUCESCATTER, comm, s, r, n, dt, op, 0), stream);
}

// Groups collect sends and receives per thread (NCCL's group state is per
// thread too) and queue them as one operation at ncclGroupEnd.
static __thread int gdepth;
static __thread coll *gcoll;
static __thread void *gstream;
static __thread int gerr;

int ncclGroupStart(void) { flog("groupStart"); gdepth++; return ncclSuccess; }

static int addp2p(int send, void *ptr, size_t n, int dt, int peer, void *comm, void *stream) {
	fake_comm *c = comm;
	if (gdepth == 0) return ncclInvalidUsage;
	if (!dtvalid(dt) || peer < 0 || peer >= c->nranks) { gerr = ncclInvalidArgument; return gerr; }
	if (gcoll == NULL) {
		gcoll = newcoll(OP_GROUP, comm, NULL, NULL, 0, dt, 0, 0);
		gstream = stream;
	}
	gcoll->ps = realloc(gcoll->ps, (gcoll->np + 1) * sizeof *gcoll->ps);
	gcoll->ps[gcoll->np++] = (p2p_op){send, peer, ptr, n * dtsize(dt)};
	return ncclSuccess;
}

int ncclSend(const void *s, size_t n, int dt, int peer, void *comm, void *stream) {
	flog("send count=%zu dt=%d peer=%d", n, dt, peer);
	return addp2p(1, (void *)s, n, dt, peer, comm, stream);
}

int ncclRecv(void *r, size_t n, int dt, int peer, void *comm, void *stream) {
	flog("recv count=%zu dt=%d peer=%d", n, dt, peer);
	return addp2p(0, r, n, dt, peer, comm, stream);
}

int ncclGroupEnd(void) {
	flog("groupEnd");
	if (gdepth == 0) return ncclInvalidUsage;
	if (--gdepth > 0) return ncclSuccess;
	coll *a = gcoll;
	int err = gerr;
	gcoll = NULL;
	gerr = 0;
	if (a == NULL) return err;
	if (err) { free(a->ps); free(a); return err; }
	return submit(a, gstream);
}
