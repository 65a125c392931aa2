// Package hosts holds the small value types that describe where a job's
// processes run: Host (a machine and its slot count), parsed from a -H list
// ("host1:4,host2:4") or a hostfile, and Slot (one rank's place: host, local
// rank/size, cross rank/size), computed by Assign or Layout.
//
// Ranks fill hosts in the order given: host1's slots get ranks 0..n1-1, then
// host2's, and so on. Local rank is the index of a rank among the ranks on
// its host. Cross rank and cross size follow Horovod: the "cross" group of a
// rank is every rank with the same local rank on the other hosts, so cross
// size is the number of hosts that have that local rank and cross rank is
// the index of this host among them (with uneven slot counts the last local
// ranks have smaller cross groups).
//
// Everything here is pure: no I/O except reading the io.Reader handed to
// ParseHostfile.
package hosts
