// A fake libcudart for the nccl package's tests: two "devices" whose memory
// is host memory.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cudaSetDevice(int dev) { return (dev < 0 || dev >= 2) ? 101 : 0; } // cudaErrorInvalidDevice
int cudaGetDeviceCount(int *n) { *n = 2; return 0; }
int cudaRuntimeGetVersion(int *v) { *v = 12040; return 0; }

const char *cudaGetErrorString(int e) {
	static __thread char buf[64];
	snprintf(buf, sizeof buf, "fake cuda error %d", e);
	return buf;
}

static char streams[4];
int cudaStreamCreate(void **s) { *s = &streams[1]; return 0; }
int cudaStreamDestroy(void *s) { return s == &streams[1] ? 0 : 400; } // cudaErrorInvalidResourceHandle
// Stream 0xB05 is busy forever: work on it never completes.
int cudaStreamQuery(void *s) { return s == (void *)0xB05 ? 600 : 0; } // cudaErrorNotReady
int cudaStreamSynchronize(void *s) { return 0; }
int cudaMalloc(void **p, size_t n) { *p = malloc(n ? n : 1); return *p ? 0 : 2; }
int cudaFree(void *p) { free(p); return 0; }
int cudaMemcpy(void *d, const void *s, size_t n, int kind) {
	if (kind != 1 && kind != 2) return 21; // cudaErrorInvalidMemcpyDirection
	memcpy(d, s, n);
	return 0;
}
