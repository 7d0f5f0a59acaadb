#!/usr/bin/env bash
# The fast-student distillation on a lent GPU machine (no network: wheels in .whl/, datasets as .devcache/*.pkl.xz
# written by `ablation.py --cache .devcache --write-cache`). Usage: bash benchmarks/gpu_ablation.sh probe|main OUT
# probe: a few short jobs (step time under concurrency) and the GPU inference paths; main: the long-budget jobs.
# TREE=<folder>: run the sources of that copy (e.g. `git archive HEAD src benchmarks`) instead of the checkout's.
set -uo pipefail
phase=$1; out=$2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
tree=${TREE:-$PWD}
export PYTHONPATH=$tree/src:/tmp/site PYTHONUNBUFFERED=1 NAPARI_DMD_ABLATION_FP32=1 OMP_NUM_THREADS=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__, torch.cuda.is_available())"
abl="python3 $tree/benchmarks/ablation.py --cache .devcache --keep-weights --no-latency --datasets hippocampus3d chaos"
if [ "$phase" = probe ]; then
  $abl --out /tmp/probe --seeds 0 1 --jobs 8 --methods ds dmd --settings full --scale 0.5 \
      --student student-fast 2>&1 | tee "$out/probe.log"
  for preset in teacher student-fast; do
    python3 $tree/benchmarks/fast_inference_paths.py --preset $preset --device cuda --repeats 5 \
        --paths eager,folded,channels-last,amp,batch16,compile 2>&1 | grep -v Warning | tee -a "$out/paths.log"
  done
else
  scale=${SCALE:-5}
  timeout ${LIMIT:-500} $abl --out /tmp/fast --seeds 0 1 2 --jobs 10 --methods ds dmd --settings full tiny \
      --scale "$scale" --student student-fast --tiny-student student-fast-tiny > "$out/fast.log" 2>&1 &
  timeout ${LIMIT:-500} $abl --out /tmp/default --seeds 0 1 2 --jobs 5 --methods ds dmd --settings full \
      --scale "$scale" --student student > "$out/default.log" 2>&1 &
  wait
  tail -40 "$out/fast.log" "$out/default.log"
  tar -czf "$out/results.tgz" -C /tmp fast/jobs default/jobs $(cd /tmp && ls -d fast/runs/*/last.pt default/runs/*/last.pt fast/runs/*/events.jsonl default/runs/*/events.jsonl 2>/dev/null)
  ls -la "$out"
fi
