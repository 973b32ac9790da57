#!/bin/bash
# A private one-node Slurm cluster on this host, for testing gang with Slurm.
#
#   contrib/slurm/test-cluster.sh up DIR     start it (or check it), wait for the node to be idle
#   contrib/slurm/test-cluster.sh down DIR   stop it, kill its jobs, remove its cgroups and DIR
#   contrib/slurm/test-cluster.sh env DIR    print the `export` lines that point srun/sbatch at it
#
# Everything lives under DIR (an absolute or relative path, made if missing):
#   DIR/etc/{slurm.conf,cgroup.conf,plugstack.conf,plugstack.conf.d/}
#   DIR/munge/{munge.key,munge.socket,...}  a private munged (root), not /etc/munge
#   DIR/state/{ctld,d}  DIR/log/*.log  DIR/run/*.pid
# Nothing is written to /etc. Clients find the cluster with SLURM_CONF=DIR/etc/slurm.conf
# (the munge socket is in slurm.conf's AuthInfo, so they need nothing else).
#
# Needs root and Debian's slurm-wlm (slurmctld, slurmd, slurm-client) and munge:
#   apt-get install -y slurm-wlm munge        (spank.h: libslurm-dev)
#
# Environment for `up` (a change restarts the daemons with the new slurm.conf):
#   SLURM_GANG_SLICE=N   Slurm's own gang scheduling: PreemptMode=GANG,
#                        SchedulerTimeSlice=N seconds (5..65533; 5 is the minimum),
#                        partition OverSubscribe=FORCE:2
#   SLURM_OVERSUBSCRIBE=N  partition OverSubscribe=FORCE:N without Slurm's gang
#                        scheduling: N jobs share each core, all running at once
#                        (the Linux scheduler shares the CPUs; ignored with
#                        SLURM_GANG_SLICE)
#   SPANK_PLUGIN="/abs/path/x.so [args]"   a `required` line in plugstack.conf
#                        (plugstack.conf.d/*.conf is included too: files dropped
#                        there are seen by the next srun/sbatch, no restart needed)
#   TC_PORT=N            slurmctld port N, slurmd port N+1 (default 16817)
#   TC_TIMEOUT=S         seconds to wait for the node to be idle (default 30)
#
# `up` is idempotent (a running cluster with the same config is left alone) and
# `down` restores the host even after a failed or partial `up`.
set -u -o pipefail

die() { echo "test-cluster: $*" >&2; exit 1; }
log() { echo "test-cluster: $*" >&2; }

[ $# -ge 2 ] || die "usage: $0 up|down|env DIR"
cmd=$1
mkdir -p -- "$2" 2>/dev/null || [ "$cmd" = down ] || die "cannot make $2"
DIR=$(realpath -m -- "$2")
case "$DIR" in /|/etc|/usr|/var|/tmp|/root|/home) die "refusing DIR=$DIR";; esac
case "$DIR" in *[[:space:]]*) die "DIR must not contain spaces";; esac
MARK="$DIR/.gang-slurm-test-cluster"
CONF="$DIR/etc/slurm.conf"
SOCK="$DIR/munge/munge.socket"
PORT=${TC_PORT:-16817}
NODE=$(hostname -s)
export SLURM_CONF="$CONF"

# pid from a pid file if that process is alive and its command line names $2
pid_of() {
	local f=$1 want=$2 p
	[ -r "$f" ] || return 1
	p=$(cat "$f" 2>/dev/null) || return 1
	[ -n "$p" ] && [ -r "/proc/$p/cmdline" ] || return 1
	tr '\0' ' ' <"/proc/$p/cmdline" | grep -qF -- "$want" || return 1
	echo "$p"
}

# our daemons: by pid file, else by the private paths in their command lines
our_pids() {
	{
		pid_of "$DIR/run/slurmctld.pid" "$CONF"
		pid_of "$DIR/run/slurmd.pid" "$CONF"
		pid_of "$DIR/munge/munged.pid" "$SOCK"
		pgrep -f -- "-f $CONF" || true
		pgrep -f -- "--socket=$SOCK" || true
	} 2>/dev/null | sort -u
}

# srun/salloc/sbatch/sattach clients of this cluster (SLURM_CONF=$CONF in their environment):
# an srun whose slurmctld is gone waits for ever
our_clients() {
	local p
	for p in $(ps -eo pid=,comm= | awk '$2 ~ /^(srun|salloc|sbatch|sattach|scancel|squeue|sinfo|scontrol)$/ {print $1}'); do
		{ tr '\0' '\n' <"/proc/$p/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$CONF" && echo "$p"
	done
}

stop_pids() { # TERM, wait up to 2 s, then KILL (the state is thrown away anyway)
	local pids=("$@") p i
	[ ${#pids[@]} -gt 0 ] || return 0
	kill -TERM "${pids[@]}" 2>/dev/null
	for i in $(seq 20); do
		local alive=0
		for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
		[ $alive = 0 ] && return 0
		sleep 0.1
	done
	kill -KILL "${pids[@]}" 2>/dev/null
	sleep 0.2
}

# Slurm's cgroup v1 trees: /sys/fs/cgroup/<controller>/slurm/uid_U/job_J/step_S[/task_T].
# Thaw, kill every task left in them (slurmstepd and the job's processes), remove the dirs
# deepest first. Only when no other slurmd runs on the host (this is a test machine).
clean_cgroups() {
	# (zombies do not count: a daemonizing parent may not be reaped yet)
	ps -eo stat=,comm= | awk '$1 !~ /^Z/ && $2 == "slurmd" {f=1} END {exit !f}' &&
		{ log "another slurmd runs: its cgroups are left alone"; return 0; }
	local roots=() r d i
	for r in /sys/fs/cgroup/*/slurm /sys/fs/cgroup/*/slurm_"$NODE"; do [ -d "$r" ] && roots+=("$r"); done
	[ ${#roots[@]} -gt 0 ] || return 0
	for i in 1 2 3 4 5; do
		for r in /sys/fs/cgroup/freezer/slurm /sys/fs/cgroup/freezer/slurm_"$NODE"; do
			[ -d "$r" ] || continue
			find "$r" -depth -name freezer.state -exec sh -c 'echo THAWED > "$1"' _ {} \; 2>/dev/null
		done
		local pids
		pids=$(cat $(find "${roots[@]}" -name cgroup.procs 2>/dev/null) 2>/dev/null | sort -u)
		[ -z "$pids" ] && break
		kill -KILL $pids 2>/dev/null
		sleep 0.2
	done
	for r in "${roots[@]}"; do
		find "$r" -depth -type d -exec rmdir {} \; 2>/dev/null
		[ -d "$r" ] && log "could not remove $r"
	done
	return 0
}

write_conf() { # into $1 (a directory)
	local d=$1 cpus
	mkdir -p "$d"
	# the node as slurmd sees it (CPUs, sockets, cores, threads, memory)
	cpus=$(slurmd -C 2>/dev/null | head -1 | sed -e 's/^NodeName=[^ ]* //')
	[ -n "$cpus" ] || cpus="CPUs=$(nproc)"
	cat >"$d/slurm.conf" <<EOF
# private one-node test cluster, made by contrib/slurm/test-cluster.sh
ClusterName=gangtest
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$DIR/etc/plugstack.conf
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup,task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=2
MinJobAge=30
EOF
	if [ -n "${SLURM_GANG_SLICE:-}" ]; then
		cat >>"$d/slurm.conf" <<EOF
# Slurm's own gang scheduling (time slicing), the baseline
PreemptType=preempt/none
PreemptMode=GANG
SchedulerTimeSlice=$SLURM_GANG_SLICE
EOF
		echo "NodeName=$NODE NodeAddr=127.0.0.1 $cpus State=UNKNOWN" >>"$d/slurm.conf"
		echo "PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:2" >>"$d/slurm.conf"
	elif [ -n "${SLURM_OVERSUBSCRIBE:-}" ]; then
		echo "NodeName=$NODE NodeAddr=127.0.0.1 $cpus State=UNKNOWN" >>"$d/slurm.conf"
		echo "PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:$SLURM_OVERSUBSCRIBE" >>"$d/slurm.conf"
	else
		echo "NodeName=$NODE NodeAddr=127.0.0.1 $cpus State=UNKNOWN" >>"$d/slurm.conf"
		echo "PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP" >>"$d/slurm.conf"
	fi
	cat >"$d/cgroup.conf" <<EOF
CgroupPlugin=cgroup/v1
CgroupAutomount=no
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=yes
ConstrainRAMSpace=no
ConstrainDevices=no
EOF
	{
		[ -n "${SPANK_PLUGIN:-}" ] && echo "required $SPANK_PLUGIN"
		echo "include $DIR/etc/plugstack.conf.d/*.conf"
	} >"$d/plugstack.conf"
}

wait_idle() {
	local t=${TC_TIMEOUT:-30} i s
	for i in $(seq $((t * 10))); do
		s=$(sinfo -h -n "$NODE" -o %t 2>/dev/null)
		case "$s" in
		idle|mix|alloc) return 0 ;;
		down*|drain*|fail*)
			# left down by an earlier run: resume it
			scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 ;;
		esac
		sleep 0.1
	done
	log "node not idle after ${t}s (state '${s:-?}'); logs in $DIR/log"
	return 1
}

up() {
	command -v slurmctld >/dev/null && command -v munged >/dev/null ||
		die "install slurm-wlm and munge first (apt-get install -y slurm-wlm munge)"
	[ "$(id -u)" = 0 ] || die "needs root"
	grep -q ' /sys/fs/cgroup/freezer cgroup ' /proc/mounts ||
		die "no cgroup v1 freezer at /sys/fs/cgroup/freezer (proctrack/cgroup with cgroup/v1 needs it)"
	mkdir -p "$DIR"/{etc,munge,state/ctld,state/d,log,run,etc/plugstack.conf.d}
	chmod 700 "$DIR" "$DIR/munge"
	touch "$MARK"

	# munge: a private key and socket, munged as root
	if ! pid_of "$DIR/munge/munged.pid" "$SOCK" >/dev/null; then
		[ -s "$DIR/munge/munge.key" ] || {
			dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
			chmod 400 "$DIR/munge/munge.key"
		}
		rm -f "$SOCK" "$SOCK.lock"
		munged --force --socket="$SOCK" --key-file="$DIR/munge/munge.key" \
			--pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" \
			--seed-file="$DIR/munge/munged.seed" ||
			die "munged failed (see $DIR/log/munged.log)"
	fi

	# the config: unchanged and running -> nothing to do; else (re)start slurmctld and slurmd
	write_conf "$DIR/run/conf.new"
	local same=1 f
	for f in slurm.conf cgroup.conf plugstack.conf; do
		cmp -s "$DIR/run/conf.new/$f" "$DIR/etc/$f" || same=0
	done
	local ctld slurmd
	ctld=$(pid_of "$DIR/run/slurmctld.pid" "$CONF")
	slurmd=$(pid_of "$DIR/run/slurmd.pid" "$CONF")
	if [ $same = 0 ] && [ -n "$ctld$slurmd" ]; then
		log "config changed: restarting slurmctld and slurmd"
		stop_pids $ctld $slurmd
		ctld='' slurmd=''
	fi
	for f in slurm.conf cgroup.conf plugstack.conf; do mv "$DIR/run/conf.new/$f" "$DIR/etc/$f"; done
	rmdir "$DIR/run/conf.new"

	if [ -z "$ctld" ]; then
		# -i: ignore old state (a fresh cluster each time, job ids from 1)
		slurmctld -i -f "$CONF" || die "slurmctld failed (see $DIR/log/slurmctld.log)"
	fi
	if [ -z "$slurmd" ]; then
		slurmd -f "$CONF" -N "$NODE" || die "slurmd failed (see $DIR/log/slurmd.log)"
	fi
	wait_idle || exit 1
	echo "export SLURM_CONF=$CONF"
}

down() {
	# jobs first, while slurmctld still answers (quick; cgroup clean-up kills what is left)
	if [ -e "$CONF" ] && pid_of "$DIR/run/slurmctld.pid" "$CONF" >/dev/null; then
		timeout 5 scancel --quiet --full --user=root >/dev/null 2>&1 || true
		timeout 5 scancel --quiet --state=PENDING >/dev/null 2>&1 || true
	fi
	local pids
	pids=$(our_clients)
	# shellcheck disable=SC2086
	[ -n "$pids" ] && kill -KILL $pids 2>/dev/null
	pids=$(our_pids)
	# shellcheck disable=SC2086
	stop_pids $pids
	clean_cgroups
	if [ -e "$MARK" ]; then
		rm -rf -- "$DIR"
	elif [ -d "$DIR" ]; then
		rmdir -- "$DIR" 2>/dev/null || log "$DIR was not made by this script: left in place"
	fi
	return 0
}

case "$cmd" in
up) up ;;
down) down ;;
env) echo "export SLURM_CONF=$CONF" ;;
*) die "usage: $0 up|down|env DIR" ;;
esac
