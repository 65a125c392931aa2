package shm

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"

	"github.com/gorovod/gorovod/internal/transport"
)

// The setup protocol, sent over the peers' already-authenticated TCP
// connection. Both sides run it symmetrically:
//
//	Offer  "GRVS" | version u8 | 1 | slots u32 | slotBytes u32 | nameLen u8 | name
//	Ack    "GRVS" | version u8 | 2 | status u8        (0: mapped, 1: failed)
//
// Each side creates the ring it receives on, offers its file name and
// geometry, maps the peer's offered file, acks, and unlinks its own file as
// soon as the peer's ack says the peer has mapped it. Integers big-endian.
const (
	wireMagic   = "GRVS"
	wireVersion = 1

	msgOffer = 1
	msgAck   = 2

	ackOK     = 0
	ackFailed = 1

	wireHeaderLen = 6
	offerFixedLen = 4 + 4 + 1
	maxNameLen    = 255
)

type offer struct {
	Slots     uint32
	SlotBytes uint32
	Name      string
}

type setupMsg struct {
	Type   byte
	Offer  offer
	Status byte
}

func (m *setupMsg) encode() []byte {
	b := []byte(wireMagic)
	b = append(b, wireVersion, m.Type)
	switch m.Type {
	case msgOffer:
		b = binary.BigEndian.AppendUint32(b, m.Offer.Slots)
		b = binary.BigEndian.AppendUint32(b, m.Offer.SlotBytes)
		b = append(b, byte(len(m.Offer.Name)))
		b = append(b, m.Offer.Name...)
	case msgAck:
		b = append(b, m.Status)
	}
	return b
}

func decodeSetupHeader(h []byte) (byte, error) {
	if len(h) < wireHeaderLen {
		return 0, fmt.Errorf("%w: shm setup header of %d bytes, want %d", transport.ErrMalformed, len(h), wireHeaderLen)
	}
	if string(h[:4]) != wireMagic {
		return 0, fmt.Errorf("%w: shm setup magic %q, want %q", transport.ErrMalformed, h[:4], wireMagic)
	}
	if h[4] != wireVersion {
		return 0, fmt.Errorf("%w: shm setup version %d, want %d", transport.ErrMalformed, h[4], wireVersion)
	}
	if h[5] != msgOffer && h[5] != msgAck {
		return 0, fmt.Errorf("%w: unknown shm setup message type %d", transport.ErrMalformed, h[5])
	}
	return h[5], nil
}

// decodeSetup parses exactly one message from b.
func decodeSetup(b []byte) (setupMsg, error) {
	var m setupMsg
	typ, err := decodeSetupHeader(b)
	if err != nil {
		return m, err
	}
	m.Type = typ
	p := b[wireHeaderLen:]
	switch typ {
	case msgOffer:
		if len(p) < offerFixedLen {
			return m, fmt.Errorf("%w: shm offer of %d bytes, want at least %d", transport.ErrMalformed, len(p), offerFixedLen)
		}
		m.Offer.Slots = binary.BigEndian.Uint32(p)
		m.Offer.SlotBytes = binary.BigEndian.Uint32(p[4:])
		n := int(p[8])
		if len(p) != offerFixedLen+n {
			return m, fmt.Errorf("%w: shm offer of %d bytes with a %d-byte name, want %d", transport.ErrMalformed, len(p), n, offerFixedLen+n)
		}
		m.Offer.Name = string(p[offerFixedLen:])
	case msgAck:
		if len(p) != 1 {
			return m, fmt.Errorf("%w: shm ack of %d bytes, want 1", transport.ErrMalformed, len(p))
		}
		m.Status = p[0]
	}
	return m, nil
}

// readSetup reads one message from r.
func readSetup(r io.Reader) (setupMsg, error) {
	var buf [wireHeaderLen + offerFixedLen + maxNameLen]byte
	if _, err := io.ReadFull(r, buf[:wireHeaderLen]); err != nil {
		return setupMsg{}, err
	}
	typ, err := decodeSetupHeader(buf[:wireHeaderLen])
	if err != nil {
		return setupMsg{}, err
	}
	n := wireHeaderLen + 1
	if typ == msgOffer {
		n = wireHeaderLen + offerFixedLen
	}
	if _, err := io.ReadFull(r, buf[wireHeaderLen:n]); err != nil {
		return setupMsg{}, err
	}
	if typ == msgOffer {
		nameLen := int(buf[n-1])
		if _, err := io.ReadFull(r, buf[n:n+nameLen]); err != nil {
			return setupMsg{}, err
		}
		n += nameLen
	}
	return decodeSetup(buf[:n])
}

// namePrefix is the fixed part of the name of the file carrying from -> to.
func namePrefix(tag string, epoch uint64, from, to int) string {
	return fmt.Sprintf("gorovod-%s-e%d-%dto%d-", tag, epoch, from, to)
}

// checkName accepts only the names this package makes for the expected
// direction: a fixed prefix and a hex suffix, so no path can sneak in.
func checkName(name, prefix string) error {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return fmt.Errorf("%w: shm file name %q, want prefix %q", transport.ErrMalformed, name, prefix)
	}
	if len(rest) != 2*suffixBytes {
		return fmt.Errorf("%w: shm file name %q has a %d-char suffix, want %d", transport.ErrMalformed, name, len(rest), 2*suffixBytes)
	}
	for _, c := range rest {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("%w: shm file name %q has a non-hex suffix", transport.ErrMalformed, name)
		}
	}
	return nil
}

// checkGeometry bounds what a peer may ask us to map.
func checkGeometry(slots, slotBytes uint32) error {
	if slots < MinSlots || slots > MaxSlots {
		return fmt.Errorf("%w: %d shm slots, want %d..%d", transport.ErrMalformed, slots, MinSlots, MaxSlots)
	}
	if slotBytes < MinSlotBytes || slotBytes > MaxSlotBytes || slotBytes%64 != 0 {
		return fmt.Errorf("%w: shm slot of %d bytes, want a multiple of 64 in %d..%d", transport.ErrMalformed, slotBytes, MinSlotBytes, MaxSlotBytes)
	}
	return nil
}

// Geometry limits and defaults.
const (
	MinSlots         = 2
	MaxSlots         = 512
	MinSlotBytes     = 4 << 10
	MaxSlotBytes     = 64 << 20
	DefaultSlots     = 8
	DefaultSlotBytes = 256 << 10

	suffixBytes = 8
)
