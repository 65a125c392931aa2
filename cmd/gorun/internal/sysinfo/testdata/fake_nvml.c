// A fake libnvidia-ml for sysinfo's tests: two GPUs. It implements exactly
// the NVML entry points probeGPUs calls, with NVML's signatures.
#include <stdio.h>
#include <string.h>

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct {
	char busIdLegacy[16];
	unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
	char busId[32];
} nvmlPciInfo_t;

static int devices[2];

int nvmlInit_v2(void) { return 0; }
int nvmlShutdown(void) { return 0; }
const char *nvmlErrorString(int r) { return r == 0 ? "Success" : "Fake NVML error"; }

int nvmlSystemGetDriverVersion(char *v, unsigned int n) { snprintf(v, n, "550.54.15"); return 0; }
int nvmlDeviceGetCount_v2(unsigned int *n) { *n = 2; return 0; }

int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **d) {
	if (i >= 2) return 2; // NVML_ERROR_INVALID_ARGUMENT
	*d = &devices[i];
	return 0;
}

static int idx(void *d) { return (int)((int *)d - devices); }

int nvmlDeviceGetName(void *d, char *name, unsigned int n) { snprintf(name, n, "Fake GPU %d", idx(d)); return 0; }
int nvmlDeviceGetUUID(void *d, char *uuid, unsigned int n) { snprintf(uuid, n, "GPU-fake-%d", idx(d)); return 0; }

int nvmlDeviceGetMemoryInfo(void *d, nvmlMemory_t *m) {
	m->total = (unsigned long long)(idx(d) + 1) << 34; // 16 GiB, 32 GiB
	m->free = m->total;
	m->used = 0;
	return 0;
}

int nvmlDeviceGetCudaComputeCapability(void *d, int *major, int *minor) { *major = 8; *minor = idx(d); return 0; }

int nvmlDeviceGetPciInfo_v3(void *d, nvmlPciInfo_t *p) {
	memset(p, 0, sizeof *p);
	snprintf(p->busId, sizeof p->busId, "00000000:%02X:00.0", 7 + idx(d));
	return 0;
}
