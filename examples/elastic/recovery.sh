#!/bin/sh
# Measures the elastic example's recovery from a kill -9, np 4 -> 3: RUNS
# times, gorun runs the example on localhost:4, worker w2 (rank 1) is
# killed once rank 0 committed step 30, and the slowest survivor's
# "recovered in" line of epoch 2 is printed (time from noticing the lost
# peer to the first committed step of the new world). Run from the
# repository root after building gorun and the example:
#
#   go build -o /tmp/el/ ./cmd/gorun ./examples/elastic
#   GORUN=/tmp/el/gorun EXAMPLE=/tmp/el/elastic sh examples/elastic/recovery.sh
set -eu
GORUN=${GORUN:-gorun}
EXAMPLE=${EXAMPLE:-./elastic}
RUNS=${RUNS:-10}
i=1
while [ "$i" -le "$RUNS" ]; do
	log=$(mktemp)
	"$GORUN" --min-np 2 -H localhost:4 --heartbeat 200ms "$EXAMPLE" -steps 150 -step-delay 10ms >"$log" 2>&1 &
	job=$!
	n=0
	until grep -q '^\[w1\]<stdout>:commit step=30$' "$log"; do
		n=$((n + 1))
		[ "$n" -lt 300 ] || { echo "run $i: no progress"; cat "$log"; exit 1; }
		sleep 0.1
	done
	pid=$(sed -n 's/.*started worker w2 on [^ ]* (pid \([0-9]*\)).*/\1/p' "$log")
	kill -9 "$pid"
	wait "$job" || { echo "run $i: gorun failed"; cat "$log"; exit 1; }
	sed -n 's/.*recovered in \([0-9.]*\)\(m*s\) (epoch 2,.*/\1 \2/p' "$log" |
		awk -v run="$i" '{ v = ($2 == "ms") ? $1 : $1 * 1000; if (v > m) m = v } END { printf "run %d: %d ms\n", run, m }'
	rm -f "$log"
	i=$((i + 1))
done
