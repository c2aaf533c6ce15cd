#!/bin/bash
# Stop the cluster started by start_local_cluster.sh: cancel its jobs (`scontrol shutdown` would leave
# running jobs alive), then end slurmd, slurmctld and munged by the pids the harness recorded, and only
# those. Logs stay in $GAPFILL_SLURM_DIR/log for a post-mortem; the next start clears the folder.
set -uo pipefail
D=${GAPFILL_SLURM_DIR:-/tmp/gapfill-slurm}
export SLURM_CONF=$D/slurm.conf
say() { echo "stop_local_cluster: $*" >&2; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ ! -d "$D/run" ]; then say "no cluster in $D"; exit 0; fi
if alive "$D/run/slurmctld.pid"; then
  scancel --user="$(id -un)" --quiet 2>/dev/null || true
  for _ in $(seq 50); do
    [ -z "$(squeue -h -t RUNNING,COMPLETING,CONFIGURING -o %i 2>/dev/null)" ] && break
    sleep 0.2
  done
fi
pids=()
for name in slurmd slurmctld munged; do               # all at once: each takes a second or two to exit
  if alive "$D/run/$name.pid"; then pids+=("$(cat "$D/run/$name.pid")"); kill -TERM "${pids[-1]}"; fi
  rm -f "$D/run/$name.pid"
done
for pid in "${pids[@]}"; do
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  if kill -0 "$pid" 2>/dev/null; then say "pid $pid ignored SIGTERM; killing it"; kill -KILL "$pid"; fi
done
say "cluster in $D stopped"
