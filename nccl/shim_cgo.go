//go:build cgo

package nccl

/*
#cgo LDFLAGS: -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// The few NCCL and CUDA runtime types this shim needs, declared here so that
// no CUDA header is needed at build time. Values and layouts are NCCL's and
// CUDA's public ABI.
typedef int ncclResult_t;
typedef struct { char internal[128]; } ncclUniqueId;
typedef void *ncclComm_t;
typedef void *cudaStream_t;
typedef int cudaError_t;

// ncclConfig_t as of NCCL 2.14 (size, magic, version, blocking). NCCL reads
// the fields a config declares through its version, so the 2.14 layout is
// accepted by every later release. The trailing int fills what was tail
// padding in 2.14 and is cgaClusterSize later: mark it undefined (INT_MIN).
typedef struct {
	size_t size;
	unsigned int magic;
	unsigned int version;
	int blocking;
	int undef;
} gr_config;

typedef struct {
	void *nccl, *cudart;
	ncclResult_t (*getVersion)(int *);
	ncclResult_t (*getUniqueId)(ncclUniqueId *);
	ncclResult_t (*commInitRank)(ncclComm_t *, int, ncclUniqueId, int);
	ncclResult_t (*commInitRankConfig)(ncclComm_t *, int, ncclUniqueId, int, gr_config *);
	ncclResult_t (*commDestroy)(ncclComm_t);
	ncclResult_t (*commAbort)(ncclComm_t);
	ncclResult_t (*commGetAsyncError)(ncclComm_t, ncclResult_t *);
	const char *(*getErrorString)(ncclResult_t);
	const char *(*getLastError)(ncclComm_t);
	ncclResult_t (*allReduce)(const void *, void *, size_t, int, int, ncclComm_t, cudaStream_t);
	ncclResult_t (*allGather)(const void *, void *, size_t, int, ncclComm_t, cudaStream_t);
	ncclResult_t (*broadcast)(const void *, void *, size_t, int, int, ncclComm_t, cudaStream_t);
	ncclResult_t (*reduceScatter)(const void *, void *, size_t, int, int, ncclComm_t, cudaStream_t);
	ncclResult_t (*send)(const void *, size_t, int, int, ncclComm_t, cudaStream_t);
	ncclResult_t (*recv)(void *, size_t, int, int, ncclComm_t, cudaStream_t);
	ncclResult_t (*groupStart)(void);
	ncclResult_t (*groupEnd)(void);
	cudaError_t (*setDevice)(int);
	cudaError_t (*getDeviceCount)(int *);
	cudaError_t (*runtimeGetVersion)(int *);
	const char *(*cudaGetErrorString)(cudaError_t);
	cudaError_t (*streamCreate)(cudaStream_t *);
	cudaError_t (*streamDestroy)(cudaStream_t);
	cudaError_t (*streamQuery)(cudaStream_t);
	cudaError_t (*streamSynchronize)(cudaStream_t);
	cudaError_t (*malloc)(void **, size_t);
	cudaError_t (*free)(void *);
	cudaError_t (*memcpy)(void *, const void *, size_t, int);
	cudaError_t (*memcpyAsync)(void *, const void *, size_t, int, cudaStream_t);
	cudaError_t (*eventCreateWithFlags)(void **, unsigned);
	cudaError_t (*eventRecord)(void *, cudaStream_t);
	cudaError_t (*eventQuery)(void *);
	cudaError_t (*eventDestroy)(void *);
} gr_lib;

typedef struct { const char *name; size_t off; int cudart; int required; } gr_sym;

static const gr_sym gr_syms[] = {
	{"ncclGetVersion", offsetof(gr_lib, getVersion), 0, 1},
	{"ncclGetUniqueId", offsetof(gr_lib, getUniqueId), 0, 1},
	{"ncclCommInitRank", offsetof(gr_lib, commInitRank), 0, 1},
	{"ncclCommInitRankConfig", offsetof(gr_lib, commInitRankConfig), 0, 0}, // 2.14
	{"ncclCommDestroy", offsetof(gr_lib, commDestroy), 0, 1},
	{"ncclCommAbort", offsetof(gr_lib, commAbort), 0, 1},
	{"ncclCommGetAsyncError", offsetof(gr_lib, commGetAsyncError), 0, 1},
	{"ncclGetErrorString", offsetof(gr_lib, getErrorString), 0, 1},
	{"ncclGetLastError", offsetof(gr_lib, getLastError), 0, 0}, // 2.13
	{"ncclAllReduce", offsetof(gr_lib, allReduce), 0, 1},
	{"ncclAllGather", offsetof(gr_lib, allGather), 0, 1},
	{"ncclBroadcast", offsetof(gr_lib, broadcast), 0, 1},
	{"ncclReduceScatter", offsetof(gr_lib, reduceScatter), 0, 1},
	{"ncclSend", offsetof(gr_lib, send), 0, 0}, // 2.7
	{"ncclRecv", offsetof(gr_lib, recv), 0, 0},
	{"ncclGroupStart", offsetof(gr_lib, groupStart), 0, 1},
	{"ncclGroupEnd", offsetof(gr_lib, groupEnd), 0, 1},
	{"cudaSetDevice", offsetof(gr_lib, setDevice), 1, 1},
	{"cudaGetDeviceCount", offsetof(gr_lib, getDeviceCount), 1, 1},
	{"cudaRuntimeGetVersion", offsetof(gr_lib, runtimeGetVersion), 1, 0},
	{"cudaGetErrorString", offsetof(gr_lib, cudaGetErrorString), 1, 1},
	{"cudaStreamCreate", offsetof(gr_lib, streamCreate), 1, 1},
	{"cudaStreamDestroy", offsetof(gr_lib, streamDestroy), 1, 1},
	{"cudaStreamQuery", offsetof(gr_lib, streamQuery), 1, 0},
	{"cudaStreamSynchronize", offsetof(gr_lib, streamSynchronize), 1, 1},
	{"cudaMalloc", offsetof(gr_lib, malloc), 1, 1},
	{"cudaFree", offsetof(gr_lib, free), 1, 1},
	{"cudaMemcpy", offsetof(gr_lib, memcpy), 1, 1},
	{"cudaMemcpyAsync", offsetof(gr_lib, memcpyAsync), 1, 0},
	{"cudaEventCreateWithFlags", offsetof(gr_lib, eventCreateWithFlags), 1, 0},
	{"cudaEventRecord", offsetof(gr_lib, eventRecord), 1, 0},
	{"cudaEventQuery", offsetof(gr_lib, eventQuery), 1, 0},
	{"cudaEventDestroy", offsetof(gr_lib, eventDestroy), 1, 0},
};

// gr_open dlopens path; on failure it copies dlerror's text into err. Both
// happen in one C call so that dlerror's per-thread state belongs to us.
static void *gr_open(const char *path, char *err, size_t n) {
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char *e = dlerror();
		snprintf(err, n, "%s", e ? e : "dlopen failed");
	}
	return h;
}

// gr_resolve fills l's function pointers; on a missing required symbol it
// names it in err and returns -1.
static int gr_resolve(gr_lib *l, char *err, size_t n) {
	for (size_t i = 0; i < sizeof gr_syms / sizeof gr_syms[0]; i++) {
		const gr_sym *s = &gr_syms[i];
		dlerror();
		void *p = dlsym(s->cudart ? l->cudart : l->nccl, s->name);
		if (p == NULL && s->required) {
			const char *e = dlerror();
			snprintf(err, n, "%s", e ? e : s->name);
			return -1;
		}
		memcpy((char *)l + s->off, &p, sizeof p);
	}
	return 0;
}

// gr_path names the file a resolved symbol came from (the library's real
// path after the loader's search).
static void gr_path(void *sym, char *buf, size_t n) {
	Dl_info info;
	buf[0] = 0;
	if (sym != NULL && dladdr(sym, &info) && info.dli_fname != NULL) {
		snprintf(buf, n, "%s", info.dli_fname);
	}
}

static void *gr_sym_getVersion(gr_lib *l) { return (void *)l->getVersion; }
static void *gr_sym_setDevice(gr_lib *l) { return (void *)l->setDevice; }

#define GR_SET_DEVICE(l, dev) do { cudaError_t ce_ = (l)->setDevice(dev); if (ce_ != 0) return -ce_; } while (0)

static int gr_getVersion(gr_lib *l, int *v) { return l->getVersion(v); }
static int gr_getUniqueId(gr_lib *l, void *id) { return l->getUniqueId((ncclUniqueId *)id); }
static const char *gr_getErrorString(gr_lib *l, int r) { return l->getErrorString(r); }
static const char *gr_getLastError(gr_lib *l, uintptr_t c) {
	return l->getLastError ? l->getLastError((ncclComm_t)c) : NULL;
}

static uintptr_t gr_slot_load(void **slot) { return (uintptr_t)__atomic_load_n(slot, __ATOMIC_ACQUIRE); }

static int gr_commInit(gr_lib *l, void **slot, int nranks, const void *id, int rank, int dev, int nonblocking) {
	GR_SET_DEVICE(l, dev);
	ncclUniqueId uid;
	memcpy(&uid, id, sizeof uid);
	if (nonblocking && l->commInitRankConfig != NULL) {
		gr_config cfg = {sizeof(gr_config), 0xcafebeefu, 21400u, 0, INT_MIN};
		return l->commInitRankConfig((ncclComm_t *)slot, nranks, uid, rank, &cfg);
	}
	return l->commInitRank((ncclComm_t *)slot, nranks, uid, rank);
}
static int gr_commDestroy(gr_lib *l, uintptr_t c) { return l->commDestroy((ncclComm_t)c); }
static int gr_commAbort(gr_lib *l, uintptr_t c) { return l->commAbort((ncclComm_t)c); }
static int gr_asyncError(gr_lib *l, uintptr_t c, int *state) {
	return l->commGetAsyncError((ncclComm_t)c, state);
}

static int gr_allReduce(gr_lib *l, int dev, uintptr_t c, uintptr_t s, uintptr_t r, size_t n, int dt, int op, uintptr_t st) {
	GR_SET_DEVICE(l, dev);
	return l->allReduce((const void *)s, (void *)r, n, dt, op, (ncclComm_t)c, (cudaStream_t)st);
}
static int gr_allGather(gr_lib *l, int dev, uintptr_t c, uintptr_t s, uintptr_t r, size_t n, int dt, uintptr_t st) {
	GR_SET_DEVICE(l, dev);
	return l->allGather((const void *)s, (void *)r, n, dt, (ncclComm_t)c, (cudaStream_t)st);
}
static int gr_broadcast(gr_lib *l, int dev, uintptr_t c, uintptr_t s, uintptr_t r, size_t n, int dt, int root, uintptr_t st) {
	GR_SET_DEVICE(l, dev);
	return l->broadcast((const void *)s, (void *)r, n, dt, root, (ncclComm_t)c, (cudaStream_t)st);
}
static int gr_reduceScatter(gr_lib *l, int dev, uintptr_t c, uintptr_t s, uintptr_t r, size_t n, int dt, int op, uintptr_t st) {
	GR_SET_DEVICE(l, dev);
	return l->reduceScatter((const void *)s, (void *)r, n, dt, op, (ncclComm_t)c, (cudaStream_t)st);
}

typedef struct { int send; int peer; uintptr_t ptr; size_t count; } gr_p2p;

// gr_group runs sends and receives between ncclGroupStart and ncclGroupEnd
// in one C call: NCCL's group state is per thread, and a Go goroutine may
// change threads between cgo calls.
static int gr_group(gr_lib *l, int dev, uintptr_t c, const gr_p2p *ps, int n, int dt, uintptr_t st) {
	GR_SET_DEVICE(l, dev);
	ncclResult_t r = l->groupStart();
	if (r != 0) return r;
	ncclResult_t first = 0;
	for (int i = 0; i < n && first == 0; i++) {
		if (ps[i].send) {
			first = l->send((const void *)ps[i].ptr, ps[i].count, dt, ps[i].peer, (ncclComm_t)c, (cudaStream_t)st);
		} else {
			first = l->recv((void *)ps[i].ptr, ps[i].count, dt, ps[i].peer, (ncclComm_t)c, (cudaStream_t)st);
		}
	}
	r = l->groupEnd();
	return first != 0 ? first : r;
}

static const char *gr_cudaErrorString(gr_lib *l, int e) { return l->cudaGetErrorString(e); }
static int gr_deviceCount(gr_lib *l, int *n) { return l->getDeviceCount(n); }
static int gr_runtimeVersion(gr_lib *l, int *v) {
	return l->runtimeGetVersion ? l->runtimeGetVersion(v) : -1;
}
static int gr_malloc(gr_lib *l, int dev, size_t n, uintptr_t *p) {
	GR_SET_DEVICE(l, dev);
	void *q = NULL;
	cudaError_t e = l->malloc(&q, n);
	*p = (uintptr_t)q;
	return e;
}
static int gr_free(gr_lib *l, int dev, uintptr_t p) {
	GR_SET_DEVICE(l, dev);
	return l->free((void *)p);
}
static int gr_toDevice(gr_lib *l, int dev, uintptr_t dst, const void *src, size_t n) {
	GR_SET_DEVICE(l, dev);
	return l->memcpy((void *)dst, src, n, 1); // cudaMemcpyHostToDevice
}
static int gr_fromDevice(gr_lib *l, int dev, void *dst, uintptr_t src, size_t n) {
	GR_SET_DEVICE(l, dev);
	return l->memcpy(dst, (const void *)src, n, 2); // cudaMemcpyDeviceToHost
}
// gr_copyAsync queues a device-to-device copy (cudaMemcpyDeviceToDevice)
// on a stream; -1 without cudaMemcpyAsync.
static int gr_copyAsync(gr_lib *l, int dev, uintptr_t dst, uintptr_t src, size_t n, uintptr_t st) {
	if (l->memcpyAsync == NULL) return -1;
	GR_SET_DEVICE(l, dev);
	return l->memcpyAsync((void *)dst, (const void *)src, n, 3, (cudaStream_t)st);
}
static int gr_streamCreate(gr_lib *l, int dev, uintptr_t *s) {
	GR_SET_DEVICE(l, dev);
	cudaStream_t st = NULL;
	cudaError_t e = l->streamCreate(&st);
	*s = (uintptr_t)st;
	return e;
}
static int gr_streamDestroy(gr_lib *l, int dev, uintptr_t s) {
	GR_SET_DEVICE(l, dev);
	return l->streamDestroy((cudaStream_t)s);
}
static int gr_streamQuery(gr_lib *l, int dev, uintptr_t s) {
	if (l->streamQuery == NULL) return -1;
	GR_SET_DEVICE(l, dev);
	return l->streamQuery((cudaStream_t)s);
}
static int gr_streamSynchronize(gr_lib *l, int dev, uintptr_t s) {
	GR_SET_DEVICE(l, dev);
	return l->streamSynchronize((cudaStream_t)s);
}
// Events: -1 when the runtime lacks one of the four calls.
static int gr_eventCreate(gr_lib *l, int dev, uintptr_t *e) {
	if (l->eventCreateWithFlags == NULL || l->eventRecord == NULL || l->eventQuery == NULL || l->eventDestroy == NULL) return -1;
	GR_SET_DEVICE(l, dev);
	void *ev = NULL;
	cudaError_t r = l->eventCreateWithFlags(&ev, 0x02); // cudaEventDisableTiming
	*e = (uintptr_t)ev;
	return r;
}
static int gr_eventRecord(gr_lib *l, int dev, uintptr_t e, uintptr_t st) {
	GR_SET_DEVICE(l, dev);
	return l->eventRecord((void *)e, (cudaStream_t)st);
}
static int gr_eventQuery(gr_lib *l, int dev, uintptr_t e) {
	GR_SET_DEVICE(l, dev);
	return l->eventQuery((void *)e);
}
static int gr_eventDestroy(gr_lib *l, int dev, uintptr_t e) {
	GR_SET_DEVICE(l, dev);
	return l->eventDestroy((void *)e);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"
)

// cShim calls through function pointers resolved with dlsym. The libraries
// stay loaded for the life of the process: communicators and device memory
// may outlive any Library value.
type cShim struct {
	l                  *C.gr_lib
	ncclPath, cudaPath string
}

// openFirst dlopens the first of names that loads. Its error lists the
// names that were simply not found together, and the loader's text for
// any that failed otherwise (wrong architecture, missing dependency).
func openFirst(names []string) (unsafe.Pointer, error) {
	var notFound, failed []string
	buf := (*C.char)(C.calloc(512, 1))
	defer C.free(unsafe.Pointer(buf))
	for _, n := range names {
		cn := C.CString(n)
		h := C.gr_open(cn, buf, 512)
		C.free(unsafe.Pointer(cn))
		if h != nil {
			return h, nil
		}
		msg := C.GoString(buf)
		if msg == n+": cannot open shared object file: No such file or directory" {
			notFound = append(notFound, n)
		} else {
			failed = append(failed, msg)
		}
	}
	if len(notFound) > 0 {
		failed = append(failed, strings.Join(notFound, ", ")+": not found")
	}
	return nil, errors.New(strings.Join(failed, "; "))
}

func loadShim(ncclNames, cudartNames []string) (shim, error) {
	nh, nerr := openFirst(ncclNames)
	ch, cerr := openFirst(cudartNames)
	switch {
	case nerr != nil && cerr != nil:
		return nil, fmt.Errorf("%w: cannot load NCCL (%v) nor the CUDA runtime (%v)", ErrUnavailable, nerr, cerr)
	case nerr != nil:
		return nil, fmt.Errorf("%w: cannot load NCCL (%v)", ErrUnavailable, nerr)
	case cerr != nil:
		return nil, fmt.Errorf("%w: cannot load the CUDA runtime libcudart (%v)", ErrUnavailable, cerr)
	}
	l := (*C.gr_lib)(C.calloc(1, C.sizeof_gr_lib))
	l.nccl, l.cudart = nh, ch
	buf := (*C.char)(C.calloc(512, 1))
	defer C.free(unsafe.Pointer(buf))
	if C.gr_resolve(l, buf, 512) != 0 {
		C.free(unsafe.Pointer(l))
		return nil, fmt.Errorf("%w: missing symbol: %s", ErrUnavailable, C.GoString(buf))
	}
	s := &cShim{l: l}
	C.gr_path(C.gr_sym_getVersion(l), buf, 512)
	s.ncclPath = C.GoString(buf)
	C.gr_path(C.gr_sym_setDevice(l), buf, 512)
	s.cudaPath = C.GoString(buf)
	return s, nil
}

func (s *cShim) paths() (string, string) { return s.ncclPath, s.cudaPath }

func (s *cShim) version() (int, Result) {
	var v C.int
	r := C.gr_getVersion(s.l, &v)
	return int(v), Result(r)
}

func (s *cShim) errorString(r Result) string {
	return C.GoString(C.gr_getErrorString(s.l, C.int(r)))
}

func (s *cShim) lastError(c handle) string {
	if c == 0 {
		return ""
	}
	return C.GoString(C.gr_getLastError(s.l, C.uintptr_t(c)))
}

func (s *cShim) uniqueID(id *UniqueID) Result {
	return Result(C.gr_getUniqueId(s.l, unsafe.Pointer(id)))
}

func (s *cShim) hasInitConfig() bool { return s.l.commInitRankConfig != nil }
func (s *cShim) hasSendRecv() bool   { return s.l.send != nil && s.l.recv != nil }

type cSlot struct{ p *unsafe.Pointer }

func (s cSlot) comm() handle { return handle(C.gr_slot_load(s.p)) }
func (s cSlot) release()     { C.free(unsafe.Pointer(s.p)) }

func (s *cShim) newSlot() initSlot {
	return cSlot{(*unsafe.Pointer)(C.calloc(1, C.size_t(unsafe.Sizeof(uintptr(0)))))}
}

func (s *cShim) commInit(sl initSlot, nranks, rank int, id *UniqueID, dev int, nonblocking bool) Result {
	nb := C.int(0)
	if nonblocking {
		nb = 1
	}
	return Result(C.gr_commInit(s.l, sl.(cSlot).p, C.int(nranks), unsafe.Pointer(id), C.int(rank), C.int(dev), nb))
}

func (s *cShim) commDestroy(c handle) Result {
	return Result(C.gr_commDestroy(s.l, C.uintptr_t(c)))
}

func (s *cShim) commAbort(c handle) Result { return Result(C.gr_commAbort(s.l, C.uintptr_t(c))) }

func (s *cShim) asyncError(c handle) (Result, Result) {
	var st C.int
	r := C.gr_asyncError(s.l, C.uintptr_t(c), &st)
	return Result(st), Result(r)
}

func (s *cShim) allReduce(dev int, c handle, send, recv DevicePtr, count int, dt DataType, op RedOp, st Stream) Result {
	return Result(C.gr_allReduce(s.l, C.int(dev), C.uintptr_t(c), C.uintptr_t(send), C.uintptr_t(recv),
		C.size_t(count), C.int(dt), C.int(op), C.uintptr_t(st)))
}

func (s *cShim) allGather(dev int, c handle, send, recv DevicePtr, count int, dt DataType, st Stream) Result {
	return Result(C.gr_allGather(s.l, C.int(dev), C.uintptr_t(c), C.uintptr_t(send), C.uintptr_t(recv),
		C.size_t(count), C.int(dt), C.uintptr_t(st)))
}

func (s *cShim) broadcast(dev int, c handle, send, recv DevicePtr, count int, dt DataType, root int, st Stream) Result {
	return Result(C.gr_broadcast(s.l, C.int(dev), C.uintptr_t(c), C.uintptr_t(send), C.uintptr_t(recv),
		C.size_t(count), C.int(dt), C.int(root), C.uintptr_t(st)))
}

func (s *cShim) reduceScatter(dev int, c handle, send, recv DevicePtr, count int, dt DataType, op RedOp, st Stream) Result {
	return Result(C.gr_reduceScatter(s.l, C.int(dev), C.uintptr_t(c), C.uintptr_t(send), C.uintptr_t(recv),
		C.size_t(count), C.int(dt), C.int(op), C.uintptr_t(st)))
}

func (s *cShim) group(dev int, c handle, ps []p2p, dt DataType, st Stream) Result {
	cps := make([]C.gr_p2p, len(ps))
	for i, p := range ps {
		if p.send {
			cps[i].send = 1
		}
		cps[i].peer = C.int(p.peer)
		cps[i].ptr = C.uintptr_t(p.ptr)
		cps[i].count = C.size_t(p.count)
	}
	var first *C.gr_p2p
	if len(cps) > 0 {
		first = &cps[0]
	}
	return Result(C.gr_group(s.l, C.int(dev), C.uintptr_t(c), first, C.int(len(cps)), C.int(dt), C.uintptr_t(st)))
}

func (s *cShim) cudaErrorString(code int) string {
	return C.GoString(C.gr_cudaErrorString(s.l, C.int(code)))
}

func (s *cShim) deviceCount() (int, int) {
	var n C.int
	e := C.gr_deviceCount(s.l, &n)
	return int(n), int(e)
}

func (s *cShim) runtimeVersion() (int, int) {
	var v C.int
	e := C.gr_runtimeVersion(s.l, &v)
	return int(v), int(e)
}

func (s *cShim) malloc(dev, n int) (DevicePtr, int) {
	var p C.uintptr_t
	e := C.gr_malloc(s.l, C.int(dev), C.size_t(n), &p)
	return DevicePtr(p), int(e)
}

func (s *cShim) free(dev int, p DevicePtr) int {
	return int(C.gr_free(s.l, C.int(dev), C.uintptr_t(p)))
}

func (s *cShim) copyToDevice(dev int, dst DevicePtr, src []byte) int {
	if len(src) == 0 {
		return 0
	}
	return int(C.gr_toDevice(s.l, C.int(dev), C.uintptr_t(dst), unsafe.Pointer(&src[0]), C.size_t(len(src))))
}

func (s *cShim) copyFromDevice(dev int, dst []byte, src DevicePtr) int {
	if len(dst) == 0 {
		return 0
	}
	return int(C.gr_fromDevice(s.l, C.int(dev), unsafe.Pointer(&dst[0]), C.uintptr_t(src), C.size_t(len(dst))))
}

func (s *cShim) copyAsync(dev int, dst, src DevicePtr, n int, st Stream) int {
	if n == 0 {
		return 0
	}
	return int(C.gr_copyAsync(s.l, C.int(dev), C.uintptr_t(dst), C.uintptr_t(src), C.size_t(n), C.uintptr_t(st)))
}

func (s *cShim) streamCreate(dev int) (Stream, int) {
	var st C.uintptr_t
	e := C.gr_streamCreate(s.l, C.int(dev), &st)
	return Stream(st), int(e)
}

func (s *cShim) streamDestroy(dev int, st Stream) int {
	return int(C.gr_streamDestroy(s.l, C.int(dev), C.uintptr_t(st)))
}

func (s *cShim) streamQuery(dev int, st Stream) int {
	return int(C.gr_streamQuery(s.l, C.int(dev), C.uintptr_t(st)))
}

func (s *cShim) streamSynchronize(dev int, st Stream) int {
	return int(C.gr_streamSynchronize(s.l, C.int(dev), C.uintptr_t(st)))
}

func (s *cShim) eventCreate(dev int) (event, int) {
	var e C.uintptr_t
	r := C.gr_eventCreate(s.l, C.int(dev), &e)
	return event(e), int(r)
}

func (s *cShim) eventRecord(dev int, e event, st Stream) int {
	return int(C.gr_eventRecord(s.l, C.int(dev), C.uintptr_t(e), C.uintptr_t(st)))
}

func (s *cShim) eventQuery(dev int, e event) int {
	return int(C.gr_eventQuery(s.l, C.int(dev), C.uintptr_t(e)))
}

func (s *cShim) eventDestroy(dev int, e event) int {
	return int(C.gr_eventDestroy(s.l, C.int(dev), C.uintptr_t(e)))
}
