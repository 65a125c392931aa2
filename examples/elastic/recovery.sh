#!/bin/sh
# Measures the elastic example under gorun, local processes (the figures
# in docs/elastic.md). Run from the repository root after building gorun
# and the example:
#
#   go build -o /tmp/el/ ./cmd/gorun ./examples/elastic
#   GORUN=/tmp/el/gorun EXAMPLE=/tmp/el/elastic sh examples/elastic/recovery.sh [kill] [join] [commit]
#
# (make elastic-recovery does the same with bin/.) With no argument it
# runs all three:
#
#   kill    RUNS times (default 10): np 4 on localhost:4, heartbeat 200 ms;
#           once rank 0 committed step 30, worker w2 (rank 1) is killed with
#           kill -9. Prints the time from the kill (the clock read just
#           before kill) to the first completed step of the new world (the
#           last of its ranks to print its first commit in epoch 2), and the
#           slowest survivor's own "recovered in" (from noticing the loss).
#   join    JOIN_RUNS times (default 5): np 3 from a discovery script run
#           every 1 s (--discovery-interval 1s); once rank 0 committed step
#           30, a host 127.0.0.2:1 is added to the script's output. Prints
#           the time from that change to the new worker's first committed
#           step.
#   commit  COMMIT_RUNS times (default 3): np 4, no step delay, STEPS steps
#           (default 1000). Prints, for the slowest rank, the mean step
#           time and the mean time in Commit (the first step in each world
#           left out) and Commit's share of the step.
#
# Times are read with date +%s%6N (GNU date) and compared with the
# example's "first-commit ... unix-us=T" lines: same machine, same clock.
set -eu
GORUN=${GORUN:-gorun}
EXAMPLE=${EXAMPLE:-./elastic}
RUNS=${RUNS:-10}
JOIN_RUNS=${JOIN_RUNS:-5}
COMMIT_RUNS=${COMMIT_RUNS:-3}
STEPS=${STEPS:-1000}
DATA=${DATA:-}

now_us() { date +%s%6N; }

# wait_line LOG REGEX: wait up to 60 s for a line of LOG matching REGEX.
wait_line() {
	n=0
	until grep -q "$2" "$1"; do
		n=$((n + 1))
		[ "$n" -lt 600 ] || { echo "no line matching $2 within 60s" >&2; cat "$1" >&2; exit 1; }
		sleep 0.1
	done
}

# first_commit_us LOG WORKER EPOCH: the unix-us of WORKER's first commit in
# EPOCH (WORKER a pattern: the latest of the workers it matches).
first_commit_us() {
	sed -n "s/^\[\($2\)\]<stdout>:first-commit epoch=$3 .*unix-us=\([0-9]*\)$/\2/p" "$1" | sort -n | tail -n 1
}

# summary NAME FILE: median and worst of the numbers (ms) in FILE.
summary() {
	sort -n "$2" | awk -v name="$1" '{ v[NR] = $1 } END {
		if (NR == 0) exit
		med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		printf "%s: %d runs, median %.0f ms, worst %.0f ms\n", name, NR, med, v[NR] }'
}

data_args() {
	if [ -n "$DATA" ]; then echo "-data $DATA"; fi
}

measure_kill() {
	out=$(mktemp)
	i=1
	while [ "$i" -le "$RUNS" ]; do
		log=$(mktemp)
		# shellcheck disable=SC2046
		"$GORUN" --min-np 2 -H localhost:4 --heartbeat 200ms "$EXAMPLE" $(data_args) -steps 150 -step-delay 10ms >"$log" 2>&1 &
		job=$!
		wait_line "$log" '^\[w1\]<stdout>:commit step=30$'
		pid=$(sed -n 's/.*started worker w2 on [^ ]* (pid \([0-9]*\)).*/\1/p' "$log")
		t0=$(now_us)
		kill -9 "$pid"
		wait "$job" || { echo "kill run $i: gorun failed"; cat "$log"; exit 1; }
		t1=$(first_commit_us "$log" "w[0-9]*" 2)
		noticed=$(sed -n 's/.*recovered in \([0-9.]*\)\(m*s\) (epoch 2,.*/\1 \2/p' "$log" |
			awk '{ v = ($2 == "ms") ? $1 : $1 * 1000; if (v > m) m = v } END { print m + 0 }')
		ms=$(((t1 - t0) / 1000))
		echo "kill run $i: kill to first step of epoch 2: $ms ms (noticed to it: $noticed ms)"
		echo "$ms" >>"$out"
		rm -f "$log"
		i=$((i + 1))
	done
	summary "kill -9 to the first completed step, np 4 -> 3" "$out"
	rm -f "$out"
}

measure_join() {
	out=$(mktemp)
	dir=$(mktemp -d)
	printf '#!/bin/sh\ncat %s/hosts.txt\n' "$dir" >"$dir/discover.sh"
	chmod +x "$dir/discover.sh"
	i=1
	while [ "$i" -le "$JOIN_RUNS" ]; do
		echo 127.0.0.1:3 >"$dir/hosts.txt"
		log=$(mktemp)
		# shellcheck disable=SC2046
		"$GORUN" --min-np 2 --host-discovery-script "$dir/discover.sh" --discovery-interval 1s --heartbeat 200ms \
			"$EXAMPLE" $(data_args) -steps 500 -step-delay 10ms >"$log" 2>&1 &
		job=$!
		wait_line "$log" '^\[w1\]<stdout>:commit step=30$'
		printf '127.0.0.1:3\n127.0.0.2:1\n' >"$dir/hosts.new"
		t0=$(now_us)
		mv "$dir/hosts.new" "$dir/hosts.txt"
		wait "$job" || { echo "join run $i: gorun failed"; cat "$log"; exit 1; }
		t1=$(first_commit_us "$log" w4 2)
		[ -n "$t1" ] || { echo "join run $i: w4 did not commit in epoch 2"; cat "$log"; exit 1; }
		ms=$(((t1 - t0) / 1000))
		echo "join run $i: discovery change to the new worker's first commit: $ms ms"
		echo "$ms" >>"$out"
		rm -f "$log"
		i=$((i + 1))
	done
	summary "host added to its first committed step (discovery interval 1 s)" "$out"
	rm -rf "$out" "$dir"
}

measure_commit() {
	i=1
	while [ "$i" -le "$COMMIT_RUNS" ]; do
		log=$(mktemp)
		# shellcheck disable=SC2046
		"$GORUN" --min-np 4 -H localhost:4 "$EXAMPLE" $(data_args) -steps "$STEPS" >"$log" 2>&1 ||
			{ echo "commit run $i: gorun failed"; cat "$log"; exit 1; }
		sed -n 's/^\[\(w[0-9]*\)\]<stdout>:done .*timed-steps=\([0-9]*\) step-us=\([0-9]*\) commit-us=\([0-9]*\)$/\1 \2 \3 \4/p' "$log" |
			awk -v run="$i" '{ if ($3 > s) { s = $3; c = $4; w = $1; n = $2 } } END {
				printf "commit run %d: slowest rank %s: mean step %d us, mean Commit %d us (%.1f%% of the step; %d steps)\n", run, w, s, c, 100 * c / s, n }'
		rm -f "$log"
		i=$((i + 1))
	done
}

[ "$#" -gt 0 ] || set -- kill join commit
for m in "$@"; do
	case "$m" in
	kill) measure_kill ;;
	join) measure_join ;;
	commit) measure_commit ;;
	*) echo "unknown measurement $m (kill, join, commit)" >&2; exit 2 ;;
	esac
done
