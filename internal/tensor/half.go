package tensor

import "math"

// Conversions between float32 and the 16-bit float formats. Narrowing rounds
// to nearest, ties to even, like the hardware converters (F16C's VCVTPS2PH
// with round-to-nearest); NaNs stay NaN (quietened, top payload bits kept).

// Float32 widens h exactly.
func (h F16) Float32() float32 { return math.Float32frombits(F16ToF32Bits(uint16(h))) }

// F16FromFloat32 rounds f to the nearest half-precision value.
func F16FromFloat32(f float32) F16 { return F16(F32ToF16Bits(math.Float32bits(f))) }

// Float32 widens b exactly.
func (b BF16) Float32() float32 { return math.Float32frombits(uint32(b) << 16) }

// BF16FromFloat32 rounds f to the nearest bfloat16 value.
func BF16FromFloat32(f float32) BF16 { return BF16(F32ToBF16Bits(math.Float32bits(f))) }

// F32ToBF16Bits rounds float32 bits to bfloat16 bits (nearest, ties to even).
func F32ToBF16Bits(u uint32) uint16 {
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 0x40 // NaN: keep sign and payload top, set quiet bit
	}
	return uint16((u + 0x7fff + (u>>16)&1) >> 16)
}

// F16ToF32Bits widens half-precision bits to float32 bits exactly.
func F16ToF32Bits(h uint16) uint32 {
	sign := uint32(h&0x8000) << 16
	e := uint32(h>>10) & 0x1f
	m := uint32(h & 0x3ff)
	switch {
	case e == 0x1f:
		if m == 0 {
			return sign | 0x7f800000
		}
		return sign | 0x7fc00000 | m<<13 // NaN, quietened
	case e != 0:
		return sign | (e+112)<<23 | m<<13
	case m == 0:
		return sign
	}
	// Subnormal half: normalise into a float32 exponent.
	e = 113
	for m&0x400 == 0 {
		m <<= 1
		e--
	}
	return sign | e<<23 | (m&0x3ff)<<13
}

// F32ToF16Bits rounds float32 bits to half-precision bits (nearest, ties to even).
func F32ToF16Bits(u uint32) uint16 {
	sign := uint16(u>>16) & 0x8000
	u &= 0x7fffffff
	switch {
	case u > 0x7f800000: // NaN
		return sign | 0x7e00 | uint16(u>>13)&0x3ff
	case u >= 0x477ff000: // >= 65520 rounds to infinity (and Inf itself)
		return sign | 0x7c00
	case u >= 0x38800000: // normal half range: rebias the exponent, round 13 bits away
		u -= 112 << 23
		u += 0xfff + (u>>13)&1
		return sign | uint16(u>>13)
	case u < 0x33000000: // below half the smallest subnormal: zero
		return sign
	}
	// Subnormal half: shift the full significand right, rounding to even.
	e := u >> 23
	m := u&0x7fffff | 0x800000
	shift := 126 - e
	r := m >> shift
	rem := m & (1<<shift - 1)
	half := uint32(1) << (shift - 1)
	if rem > half || (rem == half && r&1 == 1) {
		r++
	}
	return sign | uint16(r)
}
