#!/usr/bin/env bash
# `make demo-down`: removes what scripts/demo.sh made. Idempotent: safe to run twice, with
# nothing running, or after a demo that failed half way.
#
#   1. stops the processes of the pid files in $PURELB_DEMO_DIR/pids (a pid is signalled only
#      while its start time is the recorded one, so a reused pid is left alone): the node
#      agents first (they withdraw their addresses and write their status while the
#      apiserver is still up), then the HTTP servers, the allocator, FRR, and the control
#      plane last; SIGTERM, then SIGKILL after a grace period;
#   2. kills whatever still runs inside the demo's network namespaces (purelb-demo-*);
#   3. deletes those namespaces and the host ends of the management links (pdemo-*);
#   4. removes $PURELB_DEMO_DIR (default /var/tmp/purelb-demo).
# The demo makes no nftables tables, iptables rules or sysctl changes on the host.
set -uo pipefail

DEMO_DIR=${PURELB_DEMO_DIR:-/var/tmp/purelb-demo}
NS=purelb-demo
MGMT_IF=pdemo-
PIDS=$DEMO_DIR/pids

if [ "$(id -u)" != 0 ]; then
	echo "error: run as root" >&2
	exit 1
fi
case $(basename "$DEMO_DIR") in
purelb-demo*) ;;
*)
	echo "error: PURELB_DEMO_DIR=$DEMO_DIR does not look like a demo directory (purelb-demo*)" >&2
	exit 1
	;;
esac

# The start time of a process (field 22 of /proc/<pid>/stat), to tell it from a later one
# that reuses its pid. Nothing for a zombie: it has exited, only its parent has not reaped it.
starttime() {
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	# shellcheck disable=SC2086
	set -- $s
	case $1 in Z | X) return 1 ;; esac
	echo "${20}"
}

# The pid of pid file NAME if that process still runs, else nothing.
live_pid() {
	local pid start _
	[ -f "$PIDS/$1.pid" ] || return 1
	read -r pid start _ <"$PIDS/$1.pid" || return 1
	[ -n "$pid" ] && [ "$(starttime "$pid" 2>/dev/null)" = "$start" ] && echo "$pid"
}

# stop GRACE NAME...: SIGTERM to each, wait up to GRACE seconds, SIGKILL what is left.
stop() {
	local grace=$1 name pid
	shift
	local names=()
	for name in "$@"; do
		if pid=$(live_pid "$name"); then
			kill -TERM "$pid" 2>/dev/null && names+=("$name")
		fi
	done
	[ "${#names[@]}" -gt 0 ] || return 0
	echo "stopping ${names[*]}"
	local deadline=$((SECONDS + grace))
	while [ "$SECONDS" -lt "$deadline" ]; do
		local left=0
		for name in "${names[@]}"; do
			live_pid "$name" >/dev/null && left=1
		done
		[ "$left" = 0 ] && return 0
		sleep 0.2
	done
	for name in "${names[@]}"; do
		if pid=$(live_pid "$name"); then
			echo "  $name (pid $pid) did not stop within ${grace}s: SIGKILL"
			kill -KILL "$pid" 2>/dev/null
		fi
	done
}

names_like() { # glob: pid file names matching it
	local f
	for f in "$PIDS"/$1.pid; do
		[ -e "$f" ] && basename "$f" .pid
	done
}

if [ -d "$PIDS" ]; then
	# shellcheck disable=SC2046
	stop 15 $(names_like 'agent-*')
	# shellcheck disable=SC2046
	stop 5 $(names_like 'http-*') allocator
	stop 5 frr-bgpd frr-staticd
	stop 5 frr-zebra
	stop 10 controller-manager
	stop 10 apiserver
	stop 10 etcd
	# Anything else a pid file names.
	# shellcheck disable=SC2046
	stop 5 $(names_like '*')
fi

namespaces=$(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$NS-" || true)
for ns in $namespaces; do
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		pids=$(ip netns pids "$ns" 2>/dev/null)
		[ -n "$pids" ] || break
		# shellcheck disable=SC2086 # one line of pids
		echo "killing what still runs in $ns:" $pids
		# shellcheck disable=SC2086
		kill -KILL $pids 2>/dev/null
		sleep 0.2
	done
done
for ns in $namespaces; do
	ip netns delete "$ns" && echo "deleted namespace $ns"
done

for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^$MGMT_IF" || true); do
	ip link delete "$link" 2>/dev/null && echo "deleted host link $link"
done

if [ -e "$DEMO_DIR" ]; then
	rm -rf "$DEMO_DIR" && echo "removed $DEMO_DIR"
fi
echo "demo is down"
