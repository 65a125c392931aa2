package handshake

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/gorovod/gorovod/internal/transport"
)

// The whole wire format of the handshake. Every message is a 6-byte header
// (magic "GRVH", version, type) followed by a body whose length is fixed by
// the type. Integers are big-endian.
//
//	Hello     dialer -> acceptor  purpose u8 | epoch u64 | from u32 | to u32 | nonceD [32]
//	Challenge acceptor -> dialer  epoch u64 | rank u32 | nonceA [32] | macA [32]
//	Proof     dialer -> acceptor  macD [32]
//	Verdict   acceptor -> dialer  code u8 | epoch u64 | rank u32
//
// A Verdict with a non-zero code may replace the Challenge (epoch or rank
// refused before any MAC) or follow the Proof (bad MAC). The epoch and rank in
// a Verdict are the acceptor's own, so the dialer can log both values.
const (
	magic   = "GRVH"
	version = 1

	headerLen = 6
	nonceLen  = 32
	macLen    = 32
)

// Message types.
const (
	typeHello     = 1
	typeChallenge = 2
	typeProof     = 3
	typeVerdict   = 4
)

// Verdict codes.
const (
	codeOK      = 0
	codeEpoch   = 1 // the epochs differ
	codeRank    = 2 // the dialer asked for another rank, or the acceptor does not expect the dialer
	codeAuth    = 3 // the MAC did not verify: a different secret
	codePurpose = 4 // the acceptor does not expect this purpose from the dialer
)

func codeString(c byte) string {
	switch c {
	case codeOK:
		return "ok"
	case codeEpoch:
		return "epoch mismatch"
	case codeRank:
		return "unexpected rank"
	case codeAuth:
		return "secret mismatch"
	case codePurpose:
		return "unexpected purpose"
	}
	return fmt.Sprintf("unknown code %d", c)
}

var bodyLen = map[byte]int{
	typeHello:     1 + 8 + 4 + 4 + nonceLen,
	typeChallenge: 8 + 4 + nonceLen + macLen,
	typeProof:     macLen,
	typeVerdict:   1 + 8 + 4,
}

// message is the union of the four message types; Type says which fields
// are meaningful.
type message struct {
	Type    byte
	Purpose byte
	Epoch   uint64
	From    uint32 // Hello: the dialer's rank
	To      uint32 // Hello: the rank the dialer wants
	Rank    uint32 // Challenge, Verdict: the acceptor's rank
	Code    byte
	Nonce   [nonceLen]byte
	MAC     [macLen]byte
}

func (m *message) encode() []byte {
	n := bodyLen[m.Type]
	b := make([]byte, headerLen, headerLen+n)
	copy(b, magic)
	b[4] = version
	b[5] = m.Type
	switch m.Type {
	case typeHello:
		b = append(b, m.Purpose)
		b = binary.BigEndian.AppendUint64(b, m.Epoch)
		b = binary.BigEndian.AppendUint32(b, m.From)
		b = binary.BigEndian.AppendUint32(b, m.To)
		b = append(b, m.Nonce[:]...)
	case typeChallenge:
		b = binary.BigEndian.AppendUint64(b, m.Epoch)
		b = binary.BigEndian.AppendUint32(b, m.Rank)
		b = append(b, m.Nonce[:]...)
		b = append(b, m.MAC[:]...)
	case typeProof:
		b = append(b, m.MAC[:]...)
	case typeVerdict:
		b = append(b, m.Code)
		b = binary.BigEndian.AppendUint64(b, m.Epoch)
		b = binary.BigEndian.AppendUint32(b, m.Rank)
	}
	return b
}

// decodeHeader checks the header and returns the message type and body length.
func decodeHeader(h []byte) (typ byte, n int, err error) {
	if len(h) < headerLen {
		return 0, 0, fmt.Errorf("%w: handshake header of %d bytes, want %d", transport.ErrMalformed, len(h), headerLen)
	}
	if string(h[:4]) != magic {
		return 0, 0, fmt.Errorf("%w: handshake magic %q, want %q (not a gorovod peer?)", transport.ErrMalformed, h[:4], magic)
	}
	if h[4] != version {
		return 0, 0, fmt.Errorf("%w: handshake version %d, want %d", transport.ErrMalformed, h[4], version)
	}
	n, ok := bodyLen[h[5]]
	if !ok {
		return 0, 0, fmt.Errorf("%w: unknown handshake message type %d", transport.ErrMalformed, h[5])
	}
	return h[5], n, nil
}

// decode parses one complete message; b must hold exactly one.
func decode(b []byte) (message, error) {
	var m message
	typ, n, err := decodeHeader(b)
	if err != nil {
		return m, err
	}
	if len(b) != headerLen+n {
		return m, fmt.Errorf("%w: handshake message type %d of %d bytes, want %d", transport.ErrMalformed, typ, len(b), headerLen+n)
	}
	m.Type = typ
	p := b[headerLen:]
	switch typ {
	case typeHello:
		m.Purpose = p[0]
		m.Epoch = binary.BigEndian.Uint64(p[1:])
		m.From = binary.BigEndian.Uint32(p[9:])
		m.To = binary.BigEndian.Uint32(p[13:])
		copy(m.Nonce[:], p[17:])
	case typeChallenge:
		m.Epoch = binary.BigEndian.Uint64(p)
		m.Rank = binary.BigEndian.Uint32(p[8:])
		copy(m.Nonce[:], p[12:])
		copy(m.MAC[:], p[12+nonceLen:])
	case typeProof:
		copy(m.MAC[:], p)
	case typeVerdict:
		m.Code = p[0]
		m.Epoch = binary.BigEndian.Uint64(p[1:])
		m.Rank = binary.BigEndian.Uint32(p[9:])
	}
	return m, nil
}

// readMessage reads one message from r. The header is checked before the
// body is read, so a foreign peer costs at most 6 bytes of reading.
func readMessage(r io.Reader) (message, error) {
	var buf [headerLen + 128]byte
	if _, err := io.ReadFull(r, buf[:headerLen]); err != nil {
		return message{}, err
	}
	_, n, err := decodeHeader(buf[:headerLen])
	if err != nil {
		return message{}, err
	}
	if _, err := io.ReadFull(r, buf[headerLen:headerLen+n]); err != nil {
		return message{}, err
	}
	return decode(buf[:headerLen+n])
}
