#!/usr/bin/env bash
# The checks that need a GPU, as one short job for a borrowed, offline CUDA machine whose Python
# already holds torch, numpy, pluggy, pyyaml, tqdm, matplotlib, scikit-learn and pytest (this
# project's lent H200 image) but not the rest of gancore's needs nor the data sets.
#
#   bash benchmarks/gpu_proof.sh stage                  # here, with the package registry: fills .gpu/
#   bash benchmarks/gpu_proof.sh check                  # there, with .gpu/ carried: CUDA tests, throughput
#   bash benchmarks/gpu_proof.sh probe                  # there: check, then two short data-limited lengths
#   bash benchmarks/gpu_proof.sh long [LENGTHS]         # there: the data-limited benchmark at GPU length
#
# `stage` downloads the wheels the core and the CUDA tests need beyond that image, for the
# device's Python (GPU_PYTHON, default 3.12), pinned to this venv's versions, builds gancore's own
# wheel (its entry points register the built-in architectures; stage again after changing the
# code, since the device imports gancore from it) and copies MNIST and Fashion-MNIST from
# ../shared/datasets: about 45 MB. Both device commands install them into /tmp/site (once per
# machine) and write each part's output under $OUT as it runs.
#
# All three device modes run the CUDA tests first. `check` and `probe` then run the training
# throughput on CUDA (our step against a plain loop, each augmentation against none, compiled
# against eager); `probe` adds the data-limited runs side by side for two short lengths (300 and
# 600 steps), each run's line giving its pace once warm with all of them sharing the GPU, so that
# the lengths of `long` can be chosen to fit a lease.
# `long` trains the same 12 runs (10 % of MNIST and Fashion-MNIST, no augmentation against
# held-out-steered, 3 seeds; folders in /tmp/gpu-dl, so on a machine still warm from the probe they
# continue) to LENGTHS (comma-separated, rising; default 2000), a table at each, then once more to
# the longest length that DL_SECONDS (default 480) still allows (data_limited.py --until), from the
# pace measured so far. The runs' logs and models come back too, to be scored again elsewhere.
# DL_ARGS passes more options to data_limited.py, e.g. DL_ARGS="-S model.options.width=64".
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=.gpu

stage() {
  local py=${PY:-.venv/bin/python} version=${GPU_PYTHON:-3.12}
  rm -rf "$STAGE" && mkdir -p "$STAGE/whl" "$STAGE/datasets"
  # The device's image lacks these; typing_extensions is pinned too (pydantic needs a recent one).
  local pins
  pins=$("$py" -m pip freeze | grep -iE '^(pydantic|pydantic[-_]core|annotated[-_]types|typing[-_]inspection|typing[-_]extensions|prdc)==')
  local platforms=()
  for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
    platforms+=(--platform "$tag")
  done
  # shellcheck disable=SC2086  # one argument per pin
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp "${platforms[@]}" -d "$STAGE/whl" $pins
  "$py" -m pip wheel -q --no-deps --no-build-isolation -w "$STAGE/whl" .
  cp -r ../shared/datasets/MNIST ../shared/datasets/FashionMNIST "$STAGE/datasets/"
  du -sh "$STAGE"
}

RUNS=/tmp/gpu-dl

install() {
  local python=$1
  if [ ! -f /tmp/site/.staged ] || ! cmp -s /tmp/site/.staged <(ls -l "$STAGE"/whl); then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$STAGE"/whl/*.whl
    ls -l "$STAGE"/whl >/tmp/site/.staged
  fi
}

data_limited() {  # SECONDS JSON ARGS...: the 12 runs side by side on the GPU (their folders kept in $RUNS)
  local seconds=$1 json=$2
  shift 2
  # timeout signals the whole process group, the pool's workers too; KILL if they linger.
  # shellcheck disable=SC2086  # DL_ARGS: more options, one word each (e.g. "-S model.options.width=64")
  OMP_NUM_THREADS=1 timeout -k 20 --signal=INT "$seconds" "$python" benchmarks/data_limited.py --device cuda --workers 12 \
    --fraction 0.1 --policy none --policy held_out --out "$RUNS" --json "$json" ${DL_ARGS:-} "$@"
}

keep_logs() {  # the runs' metrics (training logs: the p and gap curves) and trained models, to score again elsewhere
  (cd "$RUNS" 2>/dev/null && tar czf "$out/dl-metrics.tgz" ./*/0.1-*/metrics ./*/0.1-*/benchmark_run.json) || true
  # In pieces under the 16 MiB a returned file may have (12 width-64 runs: about 30 MB); here
  # `cat dl-models.tgz.* | tar xz` puts them together again.
  (cd "$RUNS" 2>/dev/null && tar cz ./*/0.1-*/models | split -b 15m -d - "$out/dl-models.tgz.") || true
}

device() {
  local what=$1 lengths=${2:-2000}
  out=${OUT:-$PWD/gpu-out} python=${GPU_PY:-python3}
  mkdir -p "$out"
  install "$python"
  export PYTHONPATH=/tmp/site GANCORE_DATASETS_DIR=$PWD/$STAGE/datasets PYTHONUNBUFFERED=1 GANCORE_PROGRESS=0
  {
    nvidia-smi -L || true
    "$python" -c "import torch, gancore; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'gancore', gancore.__version__)"
  } 2>&1 | tee -a "$out/machine.txt"
  # The tests that skip without CUDA (augmentation on CUDA, compiled against eager, a CUDA run
  # resumed, PRDC on CUDA); TEST_SECONDS=0 leaves them out (a second call on a warm machine).
  if (("${TEST_SECONDS:-150}" > 0)); then
    timeout "${TEST_SECONDS:-150}" "$python" -m pytest -q -p no:cacheprovider -o addopts="" -rs -k "cuda or gpu" \
      tests/training/test_augment*.py tests/training/test_training.py tests/metrics/test_prdc.py 2>&1 | tee "$out/cuda-tests.txt" || true
  fi
  if [ "$what" != long ]; then
    {
      timeout 60 "$python" benchmarks/train_throughput.py --device cuda --archs dcgan --sizes 32 --steps 200 || true
      timeout 60 "$python" benchmarks/train_throughput.py --device cuda --archs dcgan --sizes 32 --steps 200 --augment || true
      timeout 120 "$python" benchmarks/train_throughput.py --device cuda --archs dcgan --sizes 32 --steps 200 --compile || true
    } 2>&1 | tee "$out/throughput.txt"
  fi
  if [ "$what" = check ]; then
    return
  elif [ "$what" = probe ]; then
    data_limited "${DL_SECONDS:-200}" "$out/data_limited_probe.json" --steps 300,600 2>&1 | tee "$out/data_limited.txt" || true
  else
    # A short first length proves the whole run on CUDA and times a step; --until then carries
    # the runs to the longest length the rest of the time allows. Should scoring on CUDA fail,
    # the runs (kept, trained) are scored on the CPU and continued the same way.
    local budget=${DL_SECONDS:-480} t0 rc=0
    t0=$(date +%s)
    data_limited "$budget" "$out/data_limited.json" --steps "$lengths" --until "$((budget - 30))" 2>&1 | tee "$out/data_limited.txt" || rc=$?
    local left=$((budget - $(date +%s) + t0))
    # Not after a usage error (2: bad DL_ARGS or lengths), which the same arguments would repeat.
    if [ "$rc" != 0 ] && [ "$rc" != 2 ] && [ "$rc" != 124 ] && [ "$left" -gt 90 ]; then
      echo "again, scoring on the CPU (the first invocation ended with $rc)" | tee -a "$out/data_limited.txt"
      data_limited "$left" "$out/data_limited.json" --steps "$lengths" --until "$((left - 30))" --score-on cpu 2>&1 |
        tee -a "$out/data_limited.txt" || true
    fi
  fi
  keep_logs
}

case "${1:-}" in
  stage) stage ;;
  check | probe | long) device "$@" ;;
  *) echo "usage: bash benchmarks/gpu_proof.sh stage | check | probe | long [LENGTHS]" >&2; exit 2 ;;
esac
