#!/usr/bin/env bash
# mel's GPU check: one script to run once on a machine with one NVIDIA GPU (under 8 minutes
# on an H200-class GPU with 16 cores), and in CI on CPU with --dry-run (small sizes).
#
#   bench/gpu_check.sh                      # on the GPU machine, with mel[gpu,train] installed
#   bench/gpu_check.sh --install --wheels DIR   # first install .[gpu,train] from wheels in DIR (no index)
#   bench/gpu_check.sh --bundle DIR --python python3   # a lent machine: unpack bench/gpu_bundle.py's parts
#   bench/gpu_check.sh --dry-run            # CPU, small sizes (tests/test_gpu_check.py runs this)
#
# Steps (bench/gpu_check.py): `mel info`; export a LEALLA-small-shaped random checkpoint
# (24 x 128, 8 heads, vocabulary 501,153) with int8 and fp16 variants; fp16 against fp32
# on the GPU (cosine >= 0.999); encoder texts/s by batch size, with and without IO binding;
# `mel link` of a synthetic 200k-mention corpus (64-token windows) against a 1M-entry index
# with the fp16 encoder, mentions/s and the share of time the GPU was busy (nvidia-smi
# samples); 200 `mel train` steps with mixed precision (b = 32, neg = 7), steps/s; then
# the default model (multilingual-e5-small): export, fp16 check, encoder texts/s; last, the
# fused linker (the default method) on a 100k-entity label index, 20k mentions (the target
# figures come first, should time run short). Figures, the GPU's name and the
# date go to bench/results/gpu.json. The machine needs no network: --install installs only
# from the wheels given, and without --install nothing is installed; what is missing is
# listed (exit 2). --bundle DIR checks and extracts the parts that `bench/gpu_bundle.py pack`
# wrote (copied into DIR, one transfer each) into --site (default /tmp/mel-gpu-site), installs
# this checkout there without dependencies or network, and runs with it on PYTHONPATH
# (README, "Performance", GPU).
#
# Options: --dry-run, --install, --wheels DIR, --bundle DIR, --site DIR, --python PY (default
# .venv/bin/python, else python3), --work DIR, --out FILE (rewritten after every step),
# --deadline-s S (steps that would start later are skipped and listed), --keep-work.
set -euo pipefail
cd "$(dirname "$0")/.."

install=0
wheels=""
bundle=""
site=/tmp/mel-gpu-site
python=""
args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --install) install=1 ;;
        --wheels) wheels="$2"; shift ;;
        --python) python="$2"; shift ;;
        --bundle) bundle="$2"; shift ;;
        --site) site="$2"; shift ;;
        -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) args+=("$1") ;;
    esac
    shift
done
if [[ -z "$python" ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi

if [[ $install -eq 1 ]]; then
    if [[ -n "$wheels" ]]; then
        "$python" -m pip install --no-index --find-links "$wheels" -e '.[gpu,train]'
    else
        "$python" -m pip install -e '.[gpu,train]'
    fi
fi

if [[ -n "$bundle" ]]; then
    "$python" bench/gpu_bundle.py unpack "$bundle" --target "$site"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    # The checkout's own mel/ (without mel.cli, which lives in mel_cli/) must not shadow the
    # installed package: Python puts neither the current folder nor a script's on sys.path.
    export PYTHONSAFEPATH=1
    # This checkout itself, built from the tree without fetching anything (setuptools is there).
    "$python" -m pip install --quiet --no-deps --no-build-isolation --no-index --upgrade --target "$site" .
fi

if ! "$python" -c 'import mel' 2>/dev/null; then
    echo "gpu_check: mel is not installed for $python (run with --install [--wheels DIR], or pip install -e '.[gpu,train]')" >&2
    exit 2
fi
exec "$python" bench/gpu_check.py "${args[@]}"
