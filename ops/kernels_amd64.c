//go:build cgo && !purego

// Vectorised reduction kernels. Each kernel is compiled three times (baseline
// x86-64-v2, AVX2+F16C+FMA, AVX-512) and picked once at load time with
// __builtin_cpu_supports. Results must equal the Go kernels in kernels.go bit
// for bit: no fast-math, no FMA contraction, float16/bfloat16 go through
// float32 with round-to-nearest-even.

// No multiply-add appears in these kernels, but never let one be fused.
#pragma GCC optimize("fp-contract=off")

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <immintrin.h>

enum { OP_SUM = 1, OP_AVG = 2, OP_MIN = 3, OP_MAX = 4, OP_PROD = 5 };

static inline float bits2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t f2bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline uint16_t f32_to_bf16(uint32_t u) {
	uint16_t nan = (uint16_t)(u >> 16) | 0x40;
	uint16_t r = (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
	return (u & 0x7fffffff) > 0x7f800000 ? nan : r;
}

static inline float bf16_to_f32(uint16_t h) { return bits2f((uint32_t)h << 16); }

// Scalar float16 conversions, the same algorithm as half.go; used for tails
// and on CPUs without F16C.
static inline float f16_to_f32(uint16_t h) {
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
	if (e == 0x1f) return bits2f(m ? (sign | 0x7fc00000 | (m << 13)) : (sign | 0x7f800000));
	if (e) return bits2f(sign | ((e + 112) << 23) | (m << 13));
	if (!m) return bits2f(sign);
	e = 113;
	while (!(m & 0x400)) { m <<= 1; e--; }
	return bits2f(sign | (e << 23) | ((m & 0x3ff) << 13));
}

static inline uint16_t f32_to_f16(float f) {
	uint32_t u = f2bits(f);
	uint16_t sign = (uint16_t)(u >> 16) & 0x8000;
	u &= 0x7fffffff;
	if (u > 0x7f800000) return sign | 0x7e00 | ((u >> 13) & 0x3ff);
	if (u >= 0x477ff000) return sign | 0x7c00;
	if (u >= 0x38800000) {
		u -= 112u << 23;
		u += 0xfff + ((u >> 13) & 1);
		return sign | (uint16_t)(u >> 13);
	}
	if (u < 0x33000000) return sign;
	uint32_t e = u >> 23, m = (u & 0x7fffff) | 0x800000, shift = 126 - e;
	uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
	if (rem > half || (rem == half && (r & 1))) r++;
	return sign | (uint16_t)r;
}

static inline uint16_t f_to_bf16(float f) { return f32_to_bf16(f2bits(f)); }
#define ID(x) (x)

// One reduction kernel; the loops are written per op so the compiler
// vectorises each one. Min/Max are "b < a ? b : a", the MINPS/MAXPS
// semantics the Go kernels also follow.
#define REDUCE(NAME, ATTR, TD, TV, LD, ST) \
ATTR static void NAME(int op, TD *restrict d, const TD *restrict s, size_t n) { \
	switch (op) { \
	case OP_SUM: case OP_AVG: \
		for (size_t i = 0; i < n; i++) d[i] = ST(LD(d[i]) + LD(s[i])); \
		break; \
	case OP_PROD: \
		for (size_t i = 0; i < n; i++) d[i] = ST(LD(d[i]) * LD(s[i])); \
		break; \
	case OP_MIN: \
		for (size_t i = 0; i < n; i++) { TV a = LD(d[i]), b = LD(s[i]); d[i] = ST(b < a ? b : a); } \
		break; \
	case OP_MAX: \
		for (size_t i = 0; i < n; i++) { TV a = LD(d[i]), b = LD(s[i]); d[i] = ST(b > a ? b : a); } \
		break; \
	} \
}

// REDUCE_OUT is REDUCE that also stores each result in o (the forwarded
// copy of a ring step), in the same pass.
#define REDUCE_OUT(NAME, ATTR, TD, TV, LD, ST) \
ATTR static void NAME(int op, TD *restrict d, const TD *restrict s, TD *restrict o, size_t n) { \
	switch (op) { \
	case OP_SUM: case OP_AVG: \
		for (size_t i = 0; i < n; i++) { TD v = ST(LD(d[i]) + LD(s[i])); d[i] = v; o[i] = v; } \
		break; \
	case OP_PROD: \
		for (size_t i = 0; i < n; i++) { TD v = ST(LD(d[i]) * LD(s[i])); d[i] = v; o[i] = v; } \
		break; \
	case OP_MIN: \
		for (size_t i = 0; i < n; i++) { TV a = LD(d[i]), b = LD(s[i]); TD v = ST(b < a ? b : a); d[i] = v; o[i] = v; } \
		break; \
	case OP_MAX: \
		for (size_t i = 0; i < n; i++) { TV a = LD(d[i]), b = LD(s[i]); TD v = ST(b > a ? b : a); d[i] = v; o[i] = v; } \
		break; \
	} \
}

#define SCALE(NAME, ATTR, TD, TV, LD, ST) \
ATTR static void NAME(TD *restrict d, size_t n, TV f) { \
	for (size_t i = 0; i < n; i++) d[i] = ST(LD(d[i]) * f); \
}

#define ALL(SUF, ATTR) \
	REDUCE(red_f32_##SUF, ATTR, float, float, ID, ID) \
	REDUCE(red_f64_##SUF, ATTR, double, double, ID, ID) \
	REDUCE(red_bf16_##SUF, ATTR, uint16_t, float, bf16_to_f32, f_to_bf16) \
	REDUCE_OUT(redo_f32_##SUF, ATTR, float, float, ID, ID) \
	REDUCE_OUT(redo_f64_##SUF, ATTR, double, double, ID, ID) \
	REDUCE_OUT(redo_bf16_##SUF, ATTR, uint16_t, float, bf16_to_f32, f_to_bf16) \
	SCALE(scale_f32_##SUF, ATTR, float, float, ID, ID) \
	SCALE(scale_f64_##SUF, ATTR, double, double, ID, ID) \
	SCALE(scale_bf16_##SUF, ATTR, uint16_t, float, bf16_to_f32, f_to_bf16)

#define ATTR_V2
#define ATTR_AVX2 __attribute__((target("avx2,fma,f16c")))
#define ATTR_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

ALL(v2, ATTR_V2)
ALL(avx2, ATTR_AVX2)
ALL(avx512, ATTR_AVX512)

// float16 without F16C: scalar conversions.
REDUCE(red_f16_v2, ATTR_V2, uint16_t, float, f16_to_f32, f32_to_f16)
REDUCE_OUT(redo_f16_v2, ATTR_V2, uint16_t, float, f16_to_f32, f32_to_f16)
SCALE(scale_f16_v2, ATTR_V2, uint16_t, float, f16_to_f32, f32_to_f16)

static inline float op_scalar(int op, float a, float b) {
	switch (op) {
	case OP_MIN: return b < a ? b : a;
	case OP_MAX: return b > a ? b : a;
	case OP_PROD: return a * b;
	default: return a + b;
	}
}

// float16 with F16C: 8 lanes per step, converting in hardware (round to
// nearest even, the same results as f32_to_f16).
// o, when not NULL, gets a copy of every result (REDUCE_OUT).
ATTR_AVX2 static void red_f16o_avx2(int op, uint16_t *restrict d, const uint16_t *restrict s, uint16_t *restrict o, size_t n) {
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(d + i)));
		__m256 b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i)));
		__m256 r;
		switch (op) {
		case OP_MIN: r = _mm256_min_ps(b, a); break;
		case OP_MAX: r = _mm256_max_ps(b, a); break;
		case OP_PROD: r = _mm256_mul_ps(a, b); break;
		default: r = _mm256_add_ps(a, b); break;
		}
		__m128i h = _mm256_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
		_mm_storeu_si128((__m128i *)(d + i), h);
		if (o) _mm_storeu_si128((__m128i *)(o + i), h);
	}
	for (; i < n; i++) {
		d[i] = f32_to_f16(op_scalar(op, f16_to_f32(d[i]), f16_to_f32(s[i])));
		if (o) o[i] = d[i];
	}
}

ATTR_AVX2 static void red_f16_avx2(int op, uint16_t *restrict d, const uint16_t *restrict s, size_t n) {
	red_f16o_avx2(op, d, s, NULL, n);
}

ATTR_AVX2 static void redo_f16_avx2(int op, uint16_t *restrict d, const uint16_t *restrict s, uint16_t *restrict o, size_t n) {
	red_f16o_avx2(op, d, s, o, n);
}

ATTR_AVX2 static void scale_f16_avx2(uint16_t *restrict d, size_t n, float f) {
	size_t i = 0;
	__m256 vf = _mm256_set1_ps(f);
	for (; i + 8 <= n; i += 8) {
		__m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(d + i)));
		_mm_storeu_si128((__m128i *)(d + i), _mm256_cvtps_ph(_mm256_mul_ps(a, vf), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
	}
	for (; i < n; i++) d[i] = f32_to_f16(f16_to_f32(d[i]) * f);
}

ATTR_AVX512 static void red_f16o_avx512(int op, uint16_t *restrict d, const uint16_t *restrict s, uint16_t *restrict o, size_t n) {
	size_t i = 0;
	for (; i + 16 <= n; i += 16) {
		__m512 a = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(d + i)));
		__m512 b = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + i)));
		__m512 r;
		switch (op) {
		case OP_MIN: r = _mm512_min_ps(b, a); break;
		case OP_MAX: r = _mm512_max_ps(b, a); break;
		case OP_PROD: r = _mm512_mul_ps(a, b); break;
		default: r = _mm512_add_ps(a, b); break;
		}
		__m256i h = _mm512_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
		_mm256_storeu_si256((__m256i *)(d + i), h);
		if (o) _mm256_storeu_si256((__m256i *)(o + i), h);
	}
	red_f16o_avx2(op, d + i, s + i, o ? o + i : NULL, n - i);
}

ATTR_AVX512 static void red_f16_avx512(int op, uint16_t *restrict d, const uint16_t *restrict s, size_t n) {
	red_f16o_avx512(op, d, s, NULL, n);
}

ATTR_AVX512 static void redo_f16_avx512(int op, uint16_t *restrict d, const uint16_t *restrict s, uint16_t *restrict o, size_t n) {
	red_f16o_avx512(op, d, s, o, n);
}

ATTR_AVX512 static void scale_f16_avx512(uint16_t *restrict d, size_t n, float f) {
	size_t i = 0;
	__m512 vf = _mm512_set1_ps(f);
	for (; i + 16 <= n; i += 16) {
		__m512 a = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(d + i)));
		_mm256_storeu_si256((__m256i *)(d + i), _mm512_cvtps_ph(_mm512_mul_ps(a, vf), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
	}
	scale_f16_avx2(d + i, n - i, f);
}

typedef void (*red_fn)(int, void *, const void *, size_t);
typedef void (*redo_fn)(int, void *, const void *, void *, size_t);
typedef void (*scale_fn)(void *, size_t, float);
typedef void (*scale64_fn)(void *, size_t, double);

static struct {
	int level;
	red_fn f32, f64, f16, bf16;
	redo_fn of32, of64, of16, obf16;
	scale_fn sf32, sf16, sbf16;
	scale64_fn sf64;
} K;

#define PICK(SUF) do { \
	K.f32 = (red_fn)red_f32_##SUF; K.f64 = (red_fn)red_f64_##SUF; \
	K.f16 = (red_fn)red_f16_##SUF; K.bf16 = (red_fn)red_bf16_##SUF; \
	K.of32 = (redo_fn)redo_f32_##SUF; K.of64 = (redo_fn)redo_f64_##SUF; \
	K.of16 = (redo_fn)redo_f16_##SUF; K.obf16 = (redo_fn)redo_bf16_##SUF; \
	K.sf32 = (scale_fn)scale_f32_##SUF; K.sf16 = (scale_fn)scale_f16_##SUF; \
	K.sbf16 = (scale_fn)scale_bf16_##SUF; K.sf64 = (scale64_fn)scale_f64_##SUF; \
} while (0)

static void gv_pick(int max_level) {
	__builtin_cpu_init();
	int level = 0;
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) level = 1;
	if (level == 1 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) level = 2;
	if (level > max_level) level = max_level;
	K.level = level;
	switch (level) {
	case 2: PICK(avx512); break;
	case 1: PICK(avx2); break;
	default: PICK(v2); break;
	}
}

__attribute__((constructor)) static void gv_init(void) { gv_pick(2); }

// gv_set_level caps the instruction set (tests compare every level); it
// returns the level in use. Call it only while no kernel runs.
int gv_set_level(int max_level) { gv_pick(max_level); return K.level; }

// Go DType values.
enum { DT_F32 = 1, DT_F64 = 2, DT_F16 = 7, DT_BF16 = 8 };

int gv_reduce(int dt, int op, void *d, const void *s, size_t n) {
	if (op < OP_SUM || op > OP_PROD) return 0;
	switch (dt) {
	case DT_F32: K.f32(op, d, s, n); return 1;
	case DT_F64: K.f64(op, d, s, n); return 1;
	case DT_F16: K.f16(op, d, s, n); return 1;
	case DT_BF16: K.bf16(op, d, s, n); return 1;
	}
	return 0;
}

// gv_reduce_out is gv_reduce that also copies each result to o.
int gv_reduce_out(int dt, int op, void *d, const void *s, void *o, size_t n) {
	if (op < OP_SUM || op > OP_PROD) return 0;
	switch (dt) {
	case DT_F32: K.of32(op, d, s, o, n); return 1;
	case DT_F64: K.of64(op, d, s, o, n); return 1;
	case DT_F16: K.of16(op, d, s, o, n); return 1;
	case DT_BF16: K.obf16(op, d, s, o, n); return 1;
	}
	return 0;
}

int gv_scale(int dt, void *d, size_t n, double f) {
	switch (dt) {
	case DT_F32: K.sf32(d, n, (float)f); return 1;
	case DT_F64: K.sf64(d, n, f); return 1;
	case DT_F16: K.sf16(d, n, (float)f); return 1;
	case DT_BF16: K.sbf16(d, n, (float)f); return 1;
	}
	return 0;
}
