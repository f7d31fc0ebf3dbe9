#!/usr/bin/env bash
# Usage: SLICE=NAME ZONE=ZONE ACCEL=TYPE WORKDIR=gs://BUCKET/PATH \
#          launch/tpu_pod.sh [--dry-run] --config=configs/FILE.py[:ARG] [--config.x=y ...]
#
# Runs robust_distill on a Cloud TPU VM pod slice, one JAX process per TPU VM worker:
#   1. creates the slice NAME (accelerator TYPE, e.g. v4-64 or v5litepod-64, runtime $RUNTIME)
#      in ZONE, or reuses it if it exists;
#   2. copies this repository (its committed tree, git archive HEAD) to every worker, installs
#      it there with pip (extra [tpu]: jax[tpu]) and mounts every GCS bucket named in WORKDIR
#      or in the arguments with gcsfuse at ~/gcs/BUCKET (the library reads and writes plain
#      files; gs://BUCKET/PATH becomes ~/gcs/BUCKET/PATH on the workers);
#   3. runs the same command on all workers at once: python -m robust_distill.main with
#      --workdir=$WORKDIR and --config.distributed=True (jax.distributed.initialize finds the
#      coordinator and the process ids in the TPU metadata); checkpoints and results go to the
#      GCS workdir, written collectively by all hosts;
#   4. streams the logs of all workers to this terminal (each line prefixed by gcloud with the
#      worker) and keeps a copy in logs/tpu_pod-NAME-<time>.log.
# Rerunning the same command resumes from the workdir's checkpoints.
#
# Variables: SLICE, ZONE, ACCEL, WORKDIR (required); PROJECT (default: gcloud's),
# RUNTIME (default tpu-ubuntu2204-base), SPOT=1 (preemptible capacity), REMOTE_DIR (default
# ~/robust_distill on the workers). --dry-run (or DRY_RUN=1) prints the commands instead.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dry="${DRY_RUN:-0}"
args=()
for a in "$@"; do
  if [ "$a" = "--dry-run" ]; then dry=1; else args+=("$a"); fi
done
missing=()
for v in SLICE ZONE ACCEL WORKDIR; do [ -n "${!v:-}" ] || missing+=("$v"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "launch/tpu_pod.sh: set ${missing[*]} (see the usage at the top of this file)" >&2
  exit 2
fi
if ! printf '%s\n' "${args[@]}" | grep -q -- '^--config='; then
  echo "launch/tpu_pod.sh: pass --config=configs/FILE.py[:ARG]" >&2
  exit 2
fi
runtime="${RUNTIME:-tpu-ubuntu2204-base}"
remote="${REMOTE_DIR:-~/robust_distill}"
proj=()
[ -n "${PROJECT:-}" ] && proj=(--project="$PROJECT")
spot=()
[ "${SPOT:-0}" = 1 ] && spot=(--spot)
tpu=(gcloud compute tpus tpu-vm)
stamp="$(date +%Y%m%d-%H%M%S)"
tarball="/tmp/robust_distill-$stamp.tar.gz"
log="$here/logs/tpu_pod-$SLICE-$stamp.log"

# gs://BUCKET/PATH -> ~/gcs/BUCKET/PATH (gcsfuse mounts on the workers).
buckets="$(printf '%s\n' "$WORKDIR" "${args[@]}" | grep -o 'gs://[^/ ]*' | sort -u | cut -c6- || true)"
to_mount() { printf '%s' "$1" | sed -E 's#gs://#$HOME/gcs/#g'; }
train_cmd=(python3 -m robust_distill.main)
for a in "${args[@]}"; do train_cmd+=("$(to_mount "$a")"); done
train_cmd+=("--workdir=$(to_mount "$WORKDIR")" --config.distributed=True)
train_str=""
for a in "${train_cmd[@]}"; do train_str+="\"$a\" "; done
remote_run="cd $remote && $train_str"
remote_install="mkdir -p $remote && tar -xzf /tmp/robust_distill.tar.gz -C $remote && cd $remote && python3 -m pip install -q -e '.[tpu]'"
if [ -n "$buckets" ]; then
  remote_install+=" && (command -v gcsfuse >/dev/null || (echo 'deb https://packages.cloud.google.com/apt gcsfuse-'\$(lsb_release -cs)' main' | sudo tee /etc/apt/sources.list.d/gcsfuse.list && curl -s https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add - && sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse))"
  for b in $buckets; do
    remote_install+=" && mkdir -p ~/gcs/$b && (mountpoint -q ~/gcs/$b || gcsfuse --implicit-dirs $b ~/gcs/$b)"
  done
fi

run() {  # prints the command in dry-run mode, runs it otherwise
  if [ "$dry" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi
}

echo "[tpu_pod] slice $SLICE ($ACCEL, $runtime) in $ZONE; workdir $WORKDIR"
if [ "$dry" = 1 ]; then
  echo "# if '${tpu[*]} describe $SLICE' fails, the slice is created:"
  run "${tpu[@]}" create "$SLICE" --zone="$ZONE" --accelerator-type="$ACCEL" \
    --version="$runtime" "${proj[@]}" "${spot[@]}"
elif ! "${tpu[@]}" describe "$SLICE" --zone="$ZONE" "${proj[@]}" >/dev/null 2>&1; then
  run "${tpu[@]}" create "$SLICE" --zone="$ZONE" --accelerator-type="$ACCEL" \
    --version="$runtime" "${proj[@]}" "${spot[@]}"
else
  echo "[tpu_pod] reusing the existing slice $SLICE"
fi
run git -C "$here" archive --format=tar.gz -o "$tarball" HEAD
run "${tpu[@]}" scp "$tarball" "$SLICE:/tmp/robust_distill.tar.gz" --worker=all \
  --zone="$ZONE" "${proj[@]}"
run "${tpu[@]}" ssh "$SLICE" --worker=all --zone="$ZONE" "${proj[@]}" --command="$remote_install"
if [ "$dry" = 1 ]; then
  run "${tpu[@]}" ssh "$SLICE" --worker=all --zone="$ZONE" "${proj[@]}" --command="$remote_run"
  echo "# logs of all workers are streamed here and kept in $log"
else
  mkdir -p "$here/logs"
  "${tpu[@]}" ssh "$SLICE" --worker=all --zone="$ZONE" "${proj[@]}" \
    --command="$remote_run" 2>&1 | tee "$log"
fi
