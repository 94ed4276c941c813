package split

// Arithmetic in GF(2^8) modulo x^8+x^4+x^3+x+1 (0x11b), vault/shamir's field.

// gfMul multiplies a and b in constant time (no branch or table look-up
// on them), so that timing reveals no share byte.
func gfMul(a, b byte) byte {
	var p byte
	for range 8 {
		p ^= a & -(b & 1)  // add a when b's low bit is set
		carry := -(a >> 7) // 0xff when a overflows on the shift
		a = a<<1 ^ carry&0x1b
		b >>= 1
	}
	return p
}

// evaluate returns the polynomial with coefficients coeffs (constant term
// first) at x, by Horner's rule.
func evaluate(coeffs []byte, x byte) byte {
	var y byte
	for i := len(coeffs) - 1; i >= 0; i-- {
		y = gfMul(y, x) ^ coeffs[i]
	}
	return y
}

// Log and antilog tables (generator 3), for public values only: the
// x-coordinates. Share bytes go through gfMul.
var gfExp, gfLog = func() (exp [510]byte, log [256]byte) {
	x := byte(1)
	for i := range 255 {
		exp[i], exp[i+255] = x, x
		log[x] = byte(i)
		x = gfMul(x, 3)
	}
	return exp, log
}()

// pubMul multiplies public field elements.
func pubMul(a, b byte) byte {
	if a == 0 || b == 0 {
		return 0
	}
	return gfExp[int(gfLog[a])+int(gfLog[b])]
}

// pubDiv divides public field elements; b must not be 0.
func pubDiv(a, b byte) byte {
	if a == 0 {
		return 0
	}
	return gfExp[int(gfLog[a])+255-int(gfLog[b])]
}
