#!/usr/bin/env bash
# Chapter 7 on a GPU machine, in one go (about 5 minutes on one H100/H200):
#   1. benchmarks/pipeline.py --device cuda: input pipelines and training steps, written into
#      benchmarks/RESULTS.md (CIFAR-10 from $DATA_ROOT when it is there, else random images);
#   2. course.train_cifar end to end, both recipes, random weights, on generated CIFAR-format
#      files when the real ones are absent: checks that the GPU path runs and gives its
#      images/second (the accuracy of generated data means nothing and is not recorded).
# Needs python3 with torch, torchvision, numpy, scikit-learn and tqdm; no install:
#   PYTHONPATH=. bash benchmarks/gpu_check.sh [OUTPUT_FOLDER]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/gpu_check}
mkdir -p "$out"
export PYTHONPATH=${PYTHONPATH:-.} PYTHONUNBUFFERED=1
data_root=${DATA_ROOT:-data}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision',
torchvision.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"

data_args=()
if [ -f "$data_root/cifar-10-batches-py/data_batch_1" ]; then
  data_args=(--data-root "$data_root")
fi
timeout 420 python3 benchmarks/pipeline.py --device cuda "${data_args[@]}" --workers 0 1 4 8 16 \
  --note "${NOTE:-}" 2>&1 | tee "$out/pipeline.log"
cp benchmarks/RESULTS.md "$out/RESULTS.md"

if [ ${#data_args[@]} -eq 0 ]; then
  data_root=build/fake_cifar
  python3 -c "from course.cifar import write_fake_cifar10 as w; w('$data_root', n_train=20000, n_test=2000)"
  verify=(--no-verify)
else
  verify=()
fi
for recipe in baseline improved; do
  timeout 240 python3 -m course.train_cifar --data-root "$data_root" "${verify[@]}" \
    --recipe "$recipe" --weights none --no-download --epochs "${EPOCHS:-2}" --amp bf16 \
    --channels-last --device cuda 2>&1 | tail -n 4 | tee "$out/train_$recipe.log"
done
