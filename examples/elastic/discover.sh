#!/bin/sh
# Host discovery for the elastic example: prints the hosts listed in the
# file $GOROVOD_HOSTS_FILE (default ./hosts.txt), one "host" or
# "host:slots" per line. Edit the file while the job runs to add or remove
# hosts.
cat "${GOROVOD_HOSTS_FILE:-./hosts.txt}"
