// fakecudart: the subset of the CUDA runtime API Gorovod's nccl package and
// its tests use, on host memory. Built as libcudart.so.12 by the tests (see
// nccl/fakenccl/build.go); libnccl.so.2 from fakenccl.c links against it.
//
// Devices: FAKECUDA_DEVICES of them (default 2). "Device memory" is host
// memory from malloc, so a device pointer is a host pointer.
//
// Streams are real queues: each stream has a worker thread that runs the
// work enqueued on it in order (cudaMemcpyAsync, event records, and the
// collectives fakenccl enqueues through fakecuda_enqueue). cudaStreamQuery
// reports cudaErrorNotReady while work is queued, so a caller that reads a
// result without synchronising sees stale data, as on a GPU. The legacy
// default stream (NULL) is one more such queue.
//
// Stream 0xB05 is busy forever (a stuck kernel) for the binding's tests.
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUSY_STREAM ((void *)0xB05)

enum {
	cudaSuccess = 0,
	cudaErrorInvalidValue = 1,
	cudaErrorMemoryAllocation = 2,
	cudaErrorInvalidMemcpyDirection = 21,
	cudaErrorInvalidDevice = 101,
	cudaErrorInvalidResourceHandle = 400,
	cudaErrorNotReady = 600,
};

typedef struct work {
	void (*fn)(void *);
	void *arg;
	struct work *next;
} work;

typedef struct fstream {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t th;
	work *head, *tail;
	int pending; // queued or running
	int stop;
	struct fstream *next; // registry
} fstream;

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static fstream *registry;
static fstream *legacy;
static __thread int cur_dev;

static int ndevices(void) {
	const char *s = getenv("FAKECUDA_DEVICES");
	return (s && *s) ? atoi(s) : 2;
}

int cudaSetDevice(int dev) {
	if (dev < 0 || dev >= ndevices()) return cudaErrorInvalidDevice;
	cur_dev = dev;
	return cudaSuccess;
}
int cudaGetDevice(int *dev) { *dev = cur_dev; return cudaSuccess; }
int cudaGetDeviceCount(int *n) { *n = ndevices(); return cudaSuccess; }
int cudaRuntimeGetVersion(int *v) { *v = 12040; return cudaSuccess; }
int cudaDriverGetVersion(int *v) { *v = 12040; return cudaSuccess; }

const char *cudaGetErrorString(int e) {
	static __thread char buf[64];
	snprintf(buf, sizeof buf, "fake cuda error %d", e);
	return buf;
}

static void *worker(void *p) {
	fstream *s = p;
	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (s->head == NULL && !s->stop) pthread_cond_wait(&s->cv, &s->mu);
		if (s->head == NULL && s->stop) break;
		work *w = s->head;
		pthread_mutex_unlock(&s->mu);
		w->fn(w->arg);
		pthread_mutex_lock(&s->mu);
		s->head = w->next;
		if (s->head == NULL) s->tail = NULL;
		s->pending--;
		free(w);
		pthread_cond_broadcast(&s->cv);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

static fstream *newstream(void) {
	fstream *s = calloc(1, sizeof *s);
	if (s == NULL) return NULL;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	if (pthread_create(&s->th, NULL, worker, s) != 0) {
		free(s);
		return NULL;
	}
	return s;
}

// lookup maps a cudaStream_t to its queue; NULL for an unknown handle.
static fstream *lookup(void *h) {
	pthread_mutex_lock(&reg_mu);
	fstream *found = NULL;
	if (h == NULL) {
		if (legacy == NULL) legacy = newstream();
		found = legacy;
	} else {
		for (fstream *s = registry; s; s = s->next) {
			if (s == h) { found = s; break; }
		}
	}
	pthread_mutex_unlock(&reg_mu);
	return found;
}

int cudaStreamCreate(void **out) {
	fstream *s = newstream();
	if (s == NULL) return cudaErrorMemoryAllocation;
	pthread_mutex_lock(&reg_mu);
	s->next = registry;
	registry = s;
	pthread_mutex_unlock(&reg_mu);
	*out = s;
	return cudaSuccess;
}
int cudaStreamCreateWithFlags(void **out, unsigned flags) { (void)flags; return cudaStreamCreate(out); }

int cudaStreamDestroy(void *h) {
	pthread_mutex_lock(&reg_mu);
	fstream **pp = &registry;
	while (*pp && *pp != h) pp = &(*pp)->next;
	fstream *s = *pp;
	if (s) *pp = s->next;
	pthread_mutex_unlock(&reg_mu);
	if (s == NULL) return cudaErrorInvalidResourceHandle;
	// CUDA lets queued work finish after cudaStreamDestroy returns; the
	// worker drains the queue, then exits and frees nothing we still use.
	pthread_mutex_lock(&s->mu);
	s->stop = 1;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	pthread_detach(s->th);
	return cudaSuccess;
}

// fakecuda_enqueue queues fn(arg) on a stream; fakenccl uses it for
// collectives. Returns a cudaError_t.
int fakecuda_enqueue(void *h, void (*fn)(void *), void *arg) {
	fstream *s = lookup(h);
	if (s == NULL) return cudaErrorInvalidResourceHandle;
	work *w = calloc(1, sizeof *w);
	if (w == NULL) return cudaErrorMemoryAllocation;
	w->fn = fn;
	w->arg = arg;
	pthread_mutex_lock(&s->mu);
	if (s->tail) s->tail->next = w; else s->head = w;
	s->tail = w;
	s->pending++;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return cudaSuccess;
}

int cudaStreamQuery(void *h) {
	if (h == BUSY_STREAM) return cudaErrorNotReady;
	fstream *s = lookup(h);
	if (s == NULL) return cudaErrorInvalidResourceHandle;
	pthread_mutex_lock(&s->mu);
	int busy = s->pending > 0;
	pthread_mutex_unlock(&s->mu);
	return busy ? cudaErrorNotReady : cudaSuccess;
}

static void drain(fstream *s);

int cudaStreamSynchronize(void *h) {
	if (h == BUSY_STREAM) return cudaSuccess; // only cudaStreamQuery sees it busy
	fstream *s = lookup(h);
	if (s == NULL) return cudaErrorInvalidResourceHandle;
	drain(s);
	return cudaSuccess;
}

int cudaDeviceSynchronize(void) { return cudaStreamSynchronize(NULL); }

int cudaMalloc(void **p, size_t n) {
	*p = calloc(1, n ? n : 1);
	return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
static void drain(fstream *s) {
	pthread_mutex_lock(&s->mu);
	while (s->pending > 0) pthread_cond_wait(&s->cv, &s->mu);
	pthread_mutex_unlock(&s->mu);
}

// cudaFree synchronises the device, as CUDA's does: memory is released
// only once no queued work can touch it.
int cudaFree(void *p) {
	pthread_mutex_lock(&reg_mu);
	for (fstream *s = registry; s; s = s->next) drain(s);
	if (legacy) drain(legacy);
	pthread_mutex_unlock(&reg_mu);
	free(p);
	return cudaSuccess;
}

int cudaMemcpy(void *d, const void *s, size_t n, int kind) {
	if (kind < 0 || kind > 4) return cudaErrorInvalidMemcpyDirection;
	memmove(d, s, n);
	return cudaSuccess;
}

typedef struct { void *d; const void *s; size_t n; } copy_arg;

static void run_copy(void *p) {
	copy_arg *a = p;
	memmove(a->d, a->s, a->n);
	free(a);
}

int cudaMemcpyAsync(void *d, const void *s, size_t n, int kind, void *stream) {
	if (kind < 0 || kind > 4) return cudaErrorInvalidMemcpyDirection;
	copy_arg *a = malloc(sizeof *a);
	if (a == NULL) return cudaErrorMemoryAllocation;
	a->d = d; a->s = s; a->n = n;
	int e = fakecuda_enqueue(stream, run_copy, a);
	if (e != cudaSuccess) free(a);
	return e;
}

// Events: a record queues a marker; the event is complete once the stream
// has run it. As in CUDA, an event destroyed while a record is still queued
// is released once the stream reaches it.
typedef struct {
	pthread_mutex_t mu;
	unsigned long recorded, completed;
	int dead; // destroyed; freed by the last queued marker
} fevent;

int cudaEventCreate(void **out) {
	fevent *e = calloc(1, sizeof *e);
	if (e == NULL) return cudaErrorMemoryAllocation;
	pthread_mutex_init(&e->mu, NULL);
	*out = e;
	return cudaSuccess;
}
int cudaEventCreateWithFlags(void **out, unsigned flags) { (void)flags; return cudaEventCreate(out); }
int cudaEventDestroy(void *h) {
	fevent *e = h;
	pthread_mutex_lock(&e->mu);
	int idle = e->completed >= e->recorded;
	e->dead = 1;
	pthread_mutex_unlock(&e->mu);
	if (idle) free(e);
	return cudaSuccess;
}

typedef struct { fevent *e; unsigned long seq; } mark_arg;

static void run_mark(void *p) {
	mark_arg *a = p;
	fevent *e = a->e;
	pthread_mutex_lock(&e->mu);
	if (a->seq > e->completed) e->completed = a->seq;
	int release = e->dead && e->completed >= e->recorded;
	pthread_mutex_unlock(&e->mu);
	if (release) free(e);
	free(a);
}

int cudaEventRecord(void *h, void *stream) {
	fevent *e = h;
	mark_arg *a = malloc(sizeof *a);
	if (a == NULL) return cudaErrorMemoryAllocation;
	pthread_mutex_lock(&e->mu);
	a->e = e;
	a->seq = ++e->recorded;
	pthread_mutex_unlock(&e->mu);
	int r = fakecuda_enqueue(stream, run_mark, a);
	if (r != cudaSuccess) free(a);
	return r;
}

int cudaEventQuery(void *h) {
	fevent *e = h;
	pthread_mutex_lock(&e->mu);
	int done = e->completed >= e->recorded;
	pthread_mutex_unlock(&e->mu);
	return done ? cudaSuccess : cudaErrorNotReady;
}
