// Package handshake authenticates every TCP connection between workers of a
// job before any data flows on it.
//
// The dialer sends Hello (its rank, the rank it wants, the membership epoch,
// the connection purpose and a random nonce). The acceptor checks epoch,
// ranks and purpose, then answers with a Challenge: its own nonce and
// HMAC-SHA256 over the transcript under the job secret. The dialer verifies
// that MAC (the acceptor knows the secret) and answers with its own MAC over
// the same transcript under a different label (the dialer knows the secret).
// The acceptor sends a Verdict. The secret never travels; both nonces come
// from crypto/rand, so a recorded exchange cannot be replayed.
//
// A refusal (wrong epoch, unexpected rank or purpose, wrong secret) is
// reported on both sides as an error wrapping transport.ErrAuth with the
// reason and both values, and logged at warn. The wire format lives in
// wire.go; its decoder never panics (see the fuzz targets).
//
// The handshake authenticates the peer; it does not encrypt or
// integrity-protect the data that follows (like Horovod and Gloo).
package handshake
