#!/usr/bin/env bash
# Creates a Cloud TPU VM (or a queued resource), installs neoscale with jax[tpu] in a Python 3.11
# virtualenv on every worker, and runs a study on all workers with its workdir on Cloud Storage;
# recreates the VM after a Spot preemption. See --help.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: tpu_setup.sh [COMMAND] --name=NAME [options] [-- STUDY_FLAGS...]

Commands (default: up):
  up        create the TPU VM, install, start the job on every worker
  create    create the TPU VM and install; start nothing
  install   copy this checkout (its last commit) to every worker, create a Python 3.11
            virtualenv there with uv (~/neoscale-venv) and install jax[tpu] and neoscale into it
  run       start the job on every worker; after a failure, a stop or a preemption the same
            command resumes: finished runs are skipped, interrupted ones resume from their
            checkpoints on gs://, prepared data on gs:// is reused
  stop      send SIGTERM to the job on every worker (it checkpoints and exits; `run` resumes)
  logs      print the end of worker 0's job log (--follow: keep printing)
  status    print the state of the TPU VM (or of the queued resource, with --queued)
  recreate  after a Spot preemption: delete the TPU VM (with --queued, the queued resource),
            create it again, install and run (a preempted Spot VM cannot be restarted)
  delete    delete the TPU VM (with --queued, the queued resource and its VM)

The job, on every worker at once (each process of a pod runs the same command; process 0 writes
results, fit, plots and report): with --prepare, `python -m neoscale.prepare PREPARE_FLAGS
--out=DATA_DIR --distributed` first (it returns at once when DATA_DIR is complete), then
`python -m neoscale.run --config=CONFIG --workdir=WORKDIR --distributed [STUDY_FLAGS]`, with
--config.data.data=prepared:DATA_DIR when --data-dir is given. Log: ~/neoscale-job.log.

Required:
  --name=NAME               TPU VM name (also the queued-resource id)
  --workdir=gs://B/P        study directory on Cloud Storage, shared by every worker and slice
                            (up, run, recreate)

Options:
  --zone=ZONE               default us-central2-b
  --accelerator-type=TYPE   default v4-8 (e.g. v5litepod-16, v5p-32, v6e-8)
  --version=RUNTIME         TPU runtime version; default tpu-ubuntu2204-base
                            (v5e: v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5, v6e: v2-alpha-tpuv6e)
  --project=PROJECT         gcloud project (default: gcloud's configured project)
  --spot                    use Spot capacity (preemptible: `recreate`, and the study resumes)
  --queued                  request a queued resource instead of creating the VM directly
  --config=FILE             study config (default experiments/gpt_neo.py)
  --sizes=LIST              part of the study's sizes for this slice (default: the config's);
                            slices with different --sizes may share one --workdir
  --data-dir=gs://B/D       prepared token shards (python -m neoscale.prepare --out=...)
  --prepare='FLAGS'         prepare DATA_DIR first with these (space-separated) neoscale.prepare flags:
                            --prepare='--data=hf:HuggingFaceFW/fineweb-edu:sample-100BT --tokenizer=gpt2'
  --python=VERSION          Python of the workers' virtualenv (default 3.11; TPU images have 3.10)
  --follow                  logs: keep printing new lines
  --skip-create             up: use an existing TPU VM
  --skip-install            up: do not copy/install (already done)
  --dry-run                 print the gcloud commands instead of running them
  -h, --help                show this help

Anything after `--` is passed to `python -m neoscale.run` (e.g. -- --config.data.max_epochs=2).

Example (two v4-32 slices splitting GPT-Neo, then one fit over both):
  ./tpu_setup.sh --name=neo-a --accelerator-type=v4-32 --workdir=gs://B/neo --sizes=125M,350M,760M
  ./tpu_setup.sh --name=neo-b --accelerator-type=v4-32 --workdir=gs://B/neo --sizes=1.3B,2.7B
  python -m neoscale.fit --workdir=gs://B/neo
After a preemption, the same flags with `recreate` (or `run` if the VM is still up).
EOF
}

COMMAND="up"
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
DATA_DIR=""
PREPARE_FLAGS=""
PYTHON_VERSION="3.11"
FOLLOW=0
CREATE=1
INSTALL=1
DRY_RUN=0
RUN_FLAGS=()

# On the workers.
VENV="\$HOME/neoscale-venv"
JOB_LOG="\$HOME/neoscale-job.log"
JOB_PID="\$HOME/neoscale-job.pid"

die() {
  echo "tpu_setup.sh: $*; see --help" >&2
  exit 2
}

case "${1:-}" in
  up | create | install | run | stop | logs | status | recreate | delete) COMMAND="$1"; shift ;;
  -* | "") ;;
  *) die "unknown command '$1' (up, create, install, run, stop, logs, status, recreate, delete)" ;;
esac

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
    --data-dir=*) DATA_DIR="${1#*=}" ;;
    --prepare=*) PREPARE_FLAGS="${1#*=}" ;;
    --python=*) PYTHON_VERSION="${1#*=}" ;;
    --follow) FOLLOW=1 ;;
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
[[ "$NAME" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] || die "--name '$NAME' must be lowercase letters, digits and '-'"
case "$COMMAND" in
  up | run | recreate)
    [[ -n "$WORKDIR" ]] || die "--workdir=gs://BUCKET/PATH is required"
    [[ "$WORKDIR" == gs://* ]] || die "--workdir must be on Cloud Storage (gs://...), got '$WORKDIR'"
    [[ -z "$DATA_DIR" || "$DATA_DIR" == gs://* ]] \
      || die "--data-dir must be on Cloud Storage (gs://...), got '$DATA_DIR'"
    [[ -z "$PREPARE_FLAGS" || -n "$DATA_DIR" ]] || die "--prepare needs --data-dir=gs://BUCKET/PATH"
    ;;
esac
[[ "$PYTHON_VERSION" =~ ^3\.(1[1-9]|[2-9][0-9])$ ]] \
  || die "--python=$PYTHON_VERSION: neoscale's pinned jax, flax, orbax and grain need Python 3.11 or newer"

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

# Deletes the TPU VM, or the queued resource and its VM (--force); a missing one is not an error.
delete_tpu() {
  local command=(compute tpus tpu-vm delete "$NAME" --zone "$ZONE" --quiet)
  ((QUEUED)) && command=(compute tpus queued-resources delete "$NAME" --zone "$ZONE" --force --quiet)
  if ((DRY_RUN)); then
    run "${GCLOUD[@]}" "${command[@]}"
  elif ! "${GCLOUD[@]}" "${command[@]}"; then
    echo "tpu_setup.sh: could not delete $NAME (already gone?); creating it anyway" >&2
  fi
}

tpu_status() {
  if ((QUEUED)); then
    run "${GCLOUD[@]}" compute tpus queued-resources describe "$NAME" --zone "$ZONE" \
      --format 'value(state.state)'
  else
    run "${GCLOUD[@]}" compute tpus tpu-vm describe "$NAME" --zone "$ZONE" --format 'value(state)'
  fi
}

# Runs a shell command on every worker of the TPU VM (or on one: on_workers CMD 0).
on_workers() {
  run "${GCLOUD[@]}" compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker="${2:-all}" --command "$1"
}

install_neoscale() {
  local archive="/tmp/neoscale-src.tar.gz"
  run git -C "$(dirname "$0")" archive --format=tar.gz --prefix=neoscale/ -o "$archive" HEAD
  run "${GCLOUD[@]}" compute tpus tpu-vm scp "$archive" "$NAME:~/neoscale-src.tar.gz" \
    --zone "$ZONE" --worker=all
  # uv (its standalone installer, else pip) creates the virtualenv with a Python it downloads when
  # the image lacks it (TPU images have 3.10); jax[tpu] takes the jax version neoscale pins.
  on_workers "set -euo pipefail; export PATH=\$HOME/.local/bin:\$PATH; \
command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | UV_NO_MODIFY_PATH=1 sh \
|| python3 -m pip install -q --user uv; \
rm -rf ~/neoscale && tar xzf ~/neoscale-src.tar.gz -C ~ && rm -rf $VENV; \
uv venv -q --python $PYTHON_VERSION $VENV; \
uv pip install -q --python $VENV/bin/python 'jax[tpu]' -e ~/neoscale'[gcs,hf]'; \
$VENV/bin/python -c 'import jax, neoscale; print(jax.__version__)'"
}

# The job's command line on a worker: prepare (if asked), then the study.
job_command() {
  local study=(--config="$CONFIG" --workdir="$WORKDIR" --distributed)
  [[ -n "$SIZES" ]] && study+=(--sizes="$SIZES")
  [[ -n "$DATA_DIR" ]] && study+=(--config.data.data="prepared:$DATA_DIR")
  study+=("${RUN_FLAGS[@]}")
  local job
  job="$VENV/bin/python -m neoscale.run $(quote "${study[@]}")"
  if [[ -n "$PREPARE_FLAGS" ]]; then
    local prepare
    read -r -a prepare <<<"$PREPARE_FLAGS"
    prepare+=(--out="$DATA_DIR" --distributed)
    job="$VENV/bin/python -m neoscale.prepare $(quote "${prepare[@]}") && $job"
  fi
  printf '%s\n' "$job"
}

start_job() {
  local job
  job="$(job_command)"
  # Detached in its own process group (stop signals all of it), so that the ssh session may end;
  # the log (bash -x: each command, then its output) stays on each worker. Refuses to start a
  # second job beside a running one.
  on_workers "cd ~/neoscale && if [ -f $JOB_PID ] && kill -0 -- -\$(cat $JOB_PID) 2>/dev/null; then \
echo \"\$(hostname): a job is already running (tpu_setup.sh stop first)\" >&2; exit 1; fi; \
echo \"=== \$(date -u +%FT%TZ)\" >> $JOB_LOG; \
setsid nohup bash -xc $(quote "$job") >> $JOB_LOG 2>&1 < /dev/null & echo \$! > $JOB_PID"
  echo "# follow: $0 logs --name=$NAME --zone=$ZONE --follow"
}

stop_job() {
  on_workers "if [ -f $JOB_PID ] && kill -TERM -- -\$(cat $JOB_PID) 2>/dev/null; then \
echo \"\$(hostname): stopping\"; else echo \"\$(hostname): no job running\"; fi"
}

show_logs() {
  if ((FOLLOW)); then
    on_workers "tail -n 50 -F $JOB_LOG" 0
  else
    on_workers "tail -n 50 $JOB_LOG" 0
  fi
}

case "$COMMAND" in
  up)
    ((CREATE)) && create_tpu
    ((INSTALL)) && install_neoscale
    start_job
    ;;
  create) create_tpu; install_neoscale ;;
  install) install_neoscale ;;
  run) start_job ;;
  stop) stop_job ;;
  logs) show_logs ;;
  status) tpu_status ;;
  recreate) delete_tpu; create_tpu; install_neoscale; start_job ;;
  delete) delete_tpu ;;
esac
