#!/bin/bash
# Submit a whole lrtune run on SLURM: the create job, then the worker array once it succeeded.
#   export LRTUNE_STORAGE='postgresql+psycopg://lrtune:PASSWORD@db-host:5432/lrtune'
#   LRTUNE_WORKERS=16 bash deploy/slurm/submit.sh
# LRTUNE_WORKERS: array tasks, i.e. GPUs used at once (default 8). See create.sbatch and
# worker.sbatch for the other settings; extra arguments go to both sbatch calls
# (e.g. --partition=gpu --account=me).
set -euo pipefail
: "${LRTUNE_STORAGE:?export LRTUNE_STORAGE=postgresql+psycopg://USER:PASSWORD@HOST:5432/DB first}"
here=$(cd "$(dirname "$0")" && pwd)
workers=${LRTUNE_WORKERS:-8}
if ! [[ "$workers" =~ ^[1-9][0-9]*$ ]]; then
  echo "submit.sh: LRTUNE_WORKERS=$workers: expected a positive number of array tasks" >&2
  exit 2
fi

created=$(sbatch --parsable "$@" "$here/create.sbatch")
created=${created%%;*}  # --parsable prints JOBID or JOBID;CLUSTER
array=$(sbatch --parsable "$@" --dependency="afterok:$created" --array="0-$((workers - 1))" \
  "$here/worker.sbatch")
echo "create job $created; worker array ${array%%;*} (${workers} tasks) starts when it succeeds"
echo "watch: lrtune ls (or lrtune dashboard), with the same LRTUNE_STORAGE"
