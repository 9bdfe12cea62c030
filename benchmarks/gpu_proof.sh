#!/usr/bin/env bash
# The checks that need a GPU, as one short job for a borrowed, offline CUDA machine whose Python
# already holds torch, numpy, pluggy, pyyaml, tqdm, matplotlib, scikit-learn and pytest (this
# project's lent H200 image) but not the rest of gancore's needs nor the data sets.
#
#   bash benchmarks/gpu_proof.sh stage             # here, with the package registry: fills .gpu/
#   bash benchmarks/gpu_proof.sh device [STEPS]    # there, with .gpu/ carried; results under $OUT
#
# `stage` downloads the wheels the core and the CUDA tests need beyond that image, for the
# device's Python (GPU_PYTHON, default 3.12), pinned to this venv's versions, builds gancore's own
# wheel (its entry points register the built-in architectures; stage again after changing the
# code, since the device imports gancore from it) and copies MNIST and Fashion-MNIST from
# ../shared/datasets: about 45 MB. `device` installs them into /tmp/site and runs, in order of
# importance, the CUDA tests, the data-limited benchmark at GPU length (10 % of MNIST and
# Fashion-MNIST, no augmentation against held-out-steered, 3 seeds, all 12 runs side by side on
# the GPU; STEPS default 50000; stopped after DL_SECONDS, default 420, when each finished run has
# printed its line) and the training throughput on CUDA. Each part's output goes under $OUT as it runs.
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

device() {
  local steps=${1:-50000} out=${OUT:-$PWD/gpu-out} python=${GPU_PY:-python3}
  mkdir -p "$out"
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$STAGE"/whl/*.whl
  export PYTHONPATH=/tmp/site GANCORE_DATASETS_DIR=$PWD/$STAGE/datasets PYTHONUNBUFFERED=1 GANCORE_PROGRESS=0
  {
    nvidia-smi -L || true
    "$python" -c "import torch, gancore; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'gancore', gancore.__version__)"
  } 2>&1 | tee "$out/machine.txt"
  # The tests that skip without CUDA (augmentation on CUDA, a CUDA run resumed, PRDC on CUDA).
  "$python" -m pytest -q -p no:cacheprovider -o addopts="" -rs -k "cuda or gpu" \
    tests/training/test_augment.py tests/training/test_training.py tests/metrics/test_prdc.py 2>&1 | tee "$out/cuda-tests.txt" || true
  OMP_NUM_THREADS=1 timeout --signal=INT "${DL_SECONDS:-420}" "$python" benchmarks/data_limited.py --device cuda --workers 12 \
    --fraction 0.1 --policy none --policy held_out --steps "$steps" --json "$out/data_limited.json" 2>&1 | tee "$out/data_limited.txt" || true
  "$python" benchmarks/train_throughput.py --device cuda --archs dcgan --sizes 32,64 --steps 100 2>&1 | tee "$out/throughput.txt" || true
}

case "${1:-}" in
  stage) stage ;;
  device) shift; device "$@" ;;
  *) echo "usage: bash benchmarks/gpu_proof.sh stage | device [STEPS]" >&2; exit 2 ;;
esac
