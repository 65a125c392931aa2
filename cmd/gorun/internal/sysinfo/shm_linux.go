//go:build linux

package sysinfo

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// probeShm checks what the shm transport needs: a file in dir that can be
// created, sized, mapped shared and written through the mapping.
func probeShm(dir string) Transport {
	t := Transport{Name: "shm"}
	f, err := os.CreateTemp(dir, "gorovod-check-*")
	if err != nil {
		t.Detail = fmt.Sprintf("%s not writable: %v", dir, err)
		return t
	}
	defer os.Remove(f.Name())
	defer f.Close()
	size := os.Getpagesize()
	if err := f.Truncate(int64(size)); err != nil {
		t.Detail = fmt.Sprintf("cannot size a file in %s: %v", dir, err)
		return t
	}
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Detail = fmt.Sprintf("mmap of a file in %s failed: %v", dir, err)
		return t
	}
	m[0], m[size-1] = 0x5a, 0xa5
	ok := m[0] == 0x5a && m[size-1] == 0xa5
	if err := unix.Munmap(m); err != nil {
		t.Detail = fmt.Sprintf("munmap failed: %v", err)
		return t
	}
	// Read back through the file: the mapping must be shared, not private.
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, 0); err != nil || !ok || b[0] != 0x5a {
		t.Detail = fmt.Sprintf("writes through a mapping of %s are not visible in the file", dir)
		return t
	}
	t.Available = true
	t.Detail = dir + " writable, mmap ok"
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) == nil {
		t.Detail += fmt.Sprintf(", %s free", bytesHuman(st.Bavail*uint64(st.Bsize)))
	}
	return t
}
