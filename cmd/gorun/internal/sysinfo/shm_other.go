//go:build !linux

package sysinfo

func probeShm(dir string) Transport {
	return Transport{Name: "shm", Detail: "the shm transport is Linux-only"}
}
