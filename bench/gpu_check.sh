#!/usr/bin/env bash
# One unattended check of a GPU machine for the study, under 8 minutes on one GPU: training
# throughput of the paper models (eager and compiled, real/ceiling, peak memory), DeepMedic
# packed per GPU and with larger batches, the objectives and metrics on the device, the sampler
# against the models, and an 8-trial Ray study on 1/8 GPU shares that survives a driver SIGKILL.
# Without CUDA it says so on its first line and runs the CPU variant. What each step runs and
# what the summary holds: bench/gpu_check.py.
#
#   bench/gpu_check.sh [OUT] [--only NAMES] [--budget SECONDS] [--dry-run]
#   bench/gpu_check.sh --prepare-bundle
#
# OUT (default $OUT, else ./gpu-check) receives summary.md, summary.json and steps.log; the
# exit status is 0 once the summary is written.
#
# On a GPU machine whose image has PyTorch but not this project's other dependencies (Ray,
# Optuna, SimpleITK, ...), prepare them once, here, with this checkout's .venv (`make setup`)
# and the network:
#
#   bench/gpu_check.sh --prepare-bundle
#
# It `pip download`s the wheels of BUNDLE_PACKAGES (below) for CPython 3.12 on manylinux
# x86-64, in the versions this .venv runs (medpy, a source archive, is built with `pip wheel`),
# installs them into a folder with `pip install --target`, drops what a local Ray does not use
# (ray/jars/, the Java workers, 33 MB) and the symbol tables of Ray's binaries (`strip`), and
# packs the folder into .gpu-bundle/site.tar.xz, which .git/info/exclude then ignores. The
# working tree that travels to the GPU machine is limited to 64 MiB, and the wheels alone are
# 142 MB (Ray 79, SimpleITK 53): packed this way they came to 58.1 MiB (xz -9 took 20 minutes
# on 2 busy cores), with the checkout 59.5 MiB. Then, with the device tool:
#
#   run(command="bash bench/gpu_check.sh", carry=[".gpu-bundle"], timeout_s=600)
#
# unpacks the bundle into /tmp/gpu-check-site, puts it first on PYTHONPATH (only where Ray,
# Optuna or SimpleITK are missing), and runs the check; $OUT comes back with the summary.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
export GPU_CHECK_STARTED=${GPU_CHECK_STARTED:-$(date +%s)}
BUNDLE_DIR=.gpu-bundle
BUNDLE=$BUNDLE_DIR/site.tar.xz
SITE=/tmp/gpu-check-site
# the packages the GPU image lacks (or has too old), with what they need beyond that image
BUNDLE_PACKAGES="ray optuna alembic sqlalchemy mako colorlog simpleitk jsonschema
jsonschema-specifications referencing rpds-py tensorboardx pydantic pydantic-core
annotated-types typing-inspection typing-extensions packaging monai medpy"
PLATFORMS="--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"

if [ -n "${PYTHON:-}" ]; then :
elif [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python
else PYTHON=python3
fi

prepare_bundle() (
    set -e
    local work pins exclude pure=medpy
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # shellcheck disable=SC2086 # the package list is word-split on purpose
    pins=$("$PYTHON" -c 'import sys; from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in sys.argv[1:]))' $BUNDLE_PACKAGES)
    echo "bundle: $pins"
    # shellcheck disable=SC2086
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: $PLATFORMS -d "$work/wheels" \
        $(tr ' ' '\n' <<<"$pins" | grep -v "^$pure==")
    "$PYTHON" -m pip wheel --quiet --no-deps -w "$work/wheels" "$(tr ' ' '\n' <<<"$pins" | grep "^$pure==")"
    # shellcheck disable=SC2086
    "$PYTHON" -m pip install --quiet --no-deps --no-index --no-compile --only-binary=:all: \
        $PLATFORMS --target "$work/site" "$work"/wheels/*.whl
    rm -rf "$work/site/ray/jars" "$work/site/bin"
    find "$work/site" -name __pycache__ -prune -exec rm -rf {} +
    for binary in ray/_raylet.so ray/core/src/ray/raylet/raylet ray/core/src/ray/gcs/gcs_server; do
        strip --strip-unneeded "$work/site/$binary"
    done
    mkdir -p "$BUNDLE_DIR"
    tar -C "$work/site" -cf - . | xz -9 -T0 >"$BUNDLE.tmp"
    mv "$BUNDLE.tmp" "$BUNDLE"
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qx "/$BUNDLE_DIR/" "$exclude" 2>/dev/null || echo "/$BUNDLE_DIR/" >>"$exclude"
    du -h "$BUNDLE"
    if [ "$(stat -c %s "$BUNDLE")" -gt $((60 * 1024 * 1024)) ]; then
        echo "warning: $BUNDLE is over 60 MiB; with the checkout it may pass the 64 MiB limit" >&2
    fi
)

if [ "${1:-}" = "--prepare-bundle" ]; then
    prepare_bundle
    exit $?
fi

# the bundle only where this Python lacks the project's dependencies (the GPU image)
if [ -f "$BUNDLE" ] && ! "$PYTHON" -c 'import ray, optuna, SimpleITK' 2>/dev/null; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' \
        || echo "warning: $BUNDLE holds packages for CPython 3.12, not $("$PYTHON" -V)" >&2
    if [ ! -f "$SITE/.unpacked" ] || [ "$BUNDLE" -nt "$SITE/.unpacked" ]; then
        rm -rf "$SITE" && mkdir -p "$SITE" \
            && "$PYTHON" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="tar")' \
                "$BUNDLE" "$SITE" \
            && touch "$SITE/.unpacked" || echo "could not unpack $BUNDLE into $SITE" >&2
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" bench/gpu_check.py "$@"
