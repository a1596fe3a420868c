#!/usr/bin/env bash
# Creates a Cloud TPU VM (or a queued resource), installs neoscale with jax[tpu] on every worker and
# starts a study on all workers with its workdir on Cloud Storage. See --help.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: tpu_setup.sh --name=NAME --workdir=gs://BUCKET/PATH [options] [-- RUN_FLAGS...]

Creates a Cloud TPU VM (or a queued resource), copies this checkout to every worker, installs
neoscale with jax[tpu] there, and starts `python -m neoscale.run` on all workers at once (every
process of a pod runs the same command; process 0 writes results, fit, plots and report).

Required:
  --name=NAME               TPU VM name (also the queued-resource id)
  --workdir=gs://B/P        study directory on Cloud Storage, shared by every worker and slice

Options:
  --zone=ZONE               default us-central2-b
  --accelerator-type=TYPE   default v4-8 (e.g. v5litepod-16, v5p-32, v6e-8)
  --version=RUNTIME         TPU runtime version; default tpu-ubuntu2204-base
                            (v5e: v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5, v6e: v2-alpha-tpuv6e)
  --project=PROJECT         gcloud project (default: gcloud's configured project)
  --spot                    use Spot capacity (preemptible; the study resumes when rerun)
  --queued                  request a queued resource instead of creating the VM directly
  --config=FILE             study config (default experiments/gpt_neo.py)
  --sizes=LIST              part of the study's sizes for this slice (default: the config's);
                            slices with different --sizes may share one --workdir
  --skip-create             use an existing TPU VM
  --skip-install            do not copy/install (already done)
  --dry-run                 print the gcloud commands instead of running them
  -h, --help                show this help

Anything after `--` is passed to `python -m neoscale.run` (e.g. -- --tokens_per_param=10).

Example (two v4-32 slices splitting GPT-Neo, then one fit over both):
  ./tpu_setup.sh --name=neo-a --accelerator-type=v4-32 --workdir=gs://B/neo --sizes=125M,350M,760M
  ./tpu_setup.sh --name=neo-b --accelerator-type=v4-32 --workdir=gs://B/neo --sizes=1.3B,2.7B
  python -m neoscale.fit --workdir=gs://B/neo
EOF
}

NAME=""
WORKDIR=""
ZONE="us-central2-b"
ACCELERATOR="v4-8"
RUNTIME="tpu-ubuntu2204-base"
PROJECT=""
SPOT=0
QUEUED=0
CONFIG="experiments/gpt_neo.py"
SIZES=""
CREATE=1
INSTALL=1
DRY_RUN=0
RUN_FLAGS=()

die() {
  echo "tpu_setup.sh: $*; see --help" >&2
  exit 2
}

while (($#)); do
  case "$1" in
    --name=*) NAME="${1#*=}" ;;
    --workdir=*) WORKDIR="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --accelerator-type=*) ACCELERATOR="${1#*=}" ;;
    --version=*) RUNTIME="${1#*=}" ;;
    --project=*) PROJECT="${1#*=}" ;;
    --spot) SPOT=1 ;;
    --queued) QUEUED=1 ;;
    --config=*) CONFIG="${1#*=}" ;;
    --sizes=*) SIZES="${1#*=}" ;;
    --skip-create) CREATE=0 ;;
    --skip-install) INSTALL=0 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; RUN_FLAGS=("$@"); break ;;
    *) die "unknown option '$1'" ;;
  esac
  shift
done

[[ -n "$NAME" ]] || die "--name=NAME is required"
[[ -n "$WORKDIR" ]] || die "--workdir=gs://BUCKET/PATH is required"
[[ "$WORKDIR" == gs://* ]] || die "--workdir must be on Cloud Storage (gs://...), got '$WORKDIR'"
[[ "$NAME" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] || die "--name '$NAME' must be lowercase letters, digits and '-'"

# Prints the arguments as one shell-quoted command line (plain words stay unquoted).
quote() {
  local out=() arg
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_@%+=:,./~-]+$ ]]; then
      out+=("$arg")
    else
      out+=("'${arg//\'/\'\\\'\'}'")
    fi
  done
  printf '%s\n' "${out[*]}"
}

# Runs a command, or prints it with --dry-run.
run() {
  if ((DRY_RUN)); then
    quote "$@"
  else
    "$@"
  fi
}

GCLOUD=(gcloud)
[[ -n "$PROJECT" ]] && GCLOUD+=(--project "$PROJECT")
SPOT_FLAG=()
((SPOT)) && SPOT_FLAG=(--spot)

create_tpu() {
  if ((QUEUED)); then
    run "${GCLOUD[@]}" compute tpus queued-resources create "$NAME" --node-id "$NAME" \
      --zone "$ZONE" --accelerator-type "$ACCELERATOR" --runtime-version "$RUNTIME" "${SPOT_FLAG[@]}"
    if ((DRY_RUN)); then
      echo "# then wait until the queued resource is ACTIVE:"
      run "${GCLOUD[@]}" compute tpus queued-resources describe "$NAME" --zone "$ZONE" \
        --format 'value(state.state)'
      return
    fi
    local state=""
    until [[ "$state" == ACTIVE ]]; do
      state="$("${GCLOUD[@]}" compute tpus queued-resources describe "$NAME" --zone "$ZONE" \
        --format 'value(state.state)')"
      case "$state" in
        FAILED | SUSPENDED) echo "tpu_setup.sh: queued resource $NAME is $state" >&2; exit 1 ;;
      esac
      echo "queued resource $NAME: ${state:-pending}; waiting..."
      sleep 30
    done
  else
    run "${GCLOUD[@]}" compute tpus tpu-vm create "$NAME" --zone "$ZONE" \
      --accelerator-type "$ACCELERATOR" --version "$RUNTIME" "${SPOT_FLAG[@]}"
  fi
}

# Runs a shell command on every worker of the TPU VM.
on_all_workers() {
  run "${GCLOUD[@]}" compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command "$1"
}

install_neoscale() {
  local archive="/tmp/neoscale-src.tar.gz"
  run git -C "$(dirname "$0")" archive --format=tar.gz --prefix=neoscale/ -o "$archive" HEAD
  run "${GCLOUD[@]}" compute tpus tpu-vm scp "$archive" "$NAME:~/neoscale-src.tar.gz" \
    --zone "$ZONE" --worker=all
  on_all_workers "rm -rf ~/neoscale && tar xzf ~/neoscale-src.tar.gz -C ~ \
&& python3 -m pip install -q -U pip 'jax[tpu]' && python3 -m pip install -q -e ~/neoscale'[gcs]'"
}

start_study() {
  local args=(--config="$CONFIG" --workdir="$WORKDIR" --distributed)
  [[ -n "$SIZES" ]] && args+=(--sizes="$SIZES")
  args+=("${RUN_FLAGS[@]}")
  local quoted
  quoted="$(quote "${args[@]}")"
  # Detached, so that the ssh session may end; the log stays on each worker.
  on_all_workers "cd ~/neoscale && nohup python3 -m neoscale.run ${quoted} > ~/neoscale-run.log 2>&1 &"
  echo "# follow: gcloud compute tpus tpu-vm ssh $NAME --zone $ZONE --worker=0 --command 'tail -f ~/neoscale-run.log'"
}

((CREATE)) && create_tpu
((INSTALL)) && install_neoscale
start_study
