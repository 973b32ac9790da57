#!/usr/bin/env bash
# Installs the Debian packages gang's QEMU guests and their tests need:
# QEMU (the device model of type = "hvm" domains), qemu-img (disk images in
# tests), iproute2 (tap devices on bridges), python3 (a test's two-process
# job in shared memory), and dpkg-deb/apt-get, which
# `gang guest-image linux` uses to fetch Debian's kernel and busybox;
# Slurm (slurmctld, slurmd, srun), munge, spank.h and a C compiler for the
# SPANK plugin's test (contrib/slurm/test-cluster.sh, tests/xl_slurm.rs; the
# packages' own services stay stopped: the test runs a private cluster);
# promtool (from prometheus; its service stays stopped too) to check the
# daemon's metrics;
# rsvg-convert (librsvg2-bin), the real SVG renderer the timeline tests
# (tests/xl_trace.rs) draw `gang trace --format svg` and `gang sim --svg` with.
# Idempotent: does nothing when everything is there.
set -euo pipefail
need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v python3 >/dev/null 2>&1 || need+=(python3)  # the two-process job test
# contrib/slurm/gang_spank.c and its test (xl_slurm)
{ command -v slurmctld && command -v slurmd && command -v srun; } >/dev/null 2>&1 || need+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || need+=(munge)
[ -f /usr/include/slurm/spank.h ] || need+=(libslurm-dev)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
# promtool: Prometheus' own check of the metrics endpoint (tests/xl_metrics)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v rsvg-convert >/dev/null 2>&1 || need+=(librsvg2-bin)  # tests/xl_trace.rs
if [ ${#need[@]} -eq 0 ]; then
  echo "host packages: all present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "host packages missing (${need[*]}): run as root, or: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${need[@]}"
