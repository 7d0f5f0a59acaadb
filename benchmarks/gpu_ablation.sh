#!/usr/bin/env bash
# The fast-student distillation on a lent GPU machine (no network: wheels in .whl/, datasets as .devcache/*.pkl.xz
# written by `ablation.py --cache .devcache --write-cache`). Usage: bash benchmarks/gpu_ablation.sh probe|main OUT
# probe: a few short jobs (step time under concurrency) and the GPU inference paths; main: the long-budget jobs;
# long: student-fast control/DMD/DMD-T1 at 8x on hippocampus 3D, and DMD with its target term at T = 1 (setting t1)
# at 4x for both presets and datasets; weights come back as float16 state dicts without the optimizer state.
# TREE=<folder>: run the sources of that copy (e.g. `git archive HEAD src benchmarks`) instead of the checkout's.
set -uo pipefail
phase=$1; out=$2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
tree=${TREE:-$PWD}
export PYTHONPATH=$tree/src:/tmp/site PYTHONUNBUFFERED=1 NAPARI_DMD_ABLATION_FP32=1 OMP_NUM_THREADS=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__, torch.cuda.is_available())"
abl="python3 $tree/benchmarks/ablation.py --cache .devcache --keep-weights --no-latency --datasets hippocampus3d chaos"
if [ "$phase" = low ]; then
  lim=${LIMIT:-360}
  timeout $lim $abl --out /tmp/low --seeds 0 1 2 --jobs 9 --methods pseudo dkd dmd --settings lowlabel \
      --datasets hippocampus3d --scale 4 --student student > "$out/low.log" 2>&1 &
  timeout $lim $abl --out /tmp/more --seeds 3 4 5 --jobs 6 --methods ds dmd --settings full \
      --datasets chaos --scale 4 --student student > "$out/more.log" 2>&1 &
  wait
  tail -n 25 "$out/low.log" "$out/more.log"
  tar -czf "$out/results.tgz" -C /tmp low/jobs more/jobs $(cd /tmp && ls -d */runs/*/events.jsonl 2>/dev/null)
  exit 0
fi
if [ "$phase" = probe ]; then
  $abl --out /tmp/probe --seeds 0 1 --jobs 8 --methods ds dmd --settings full --scale 0.5 \
      --student student-fast 2>&1 | tee "$out/probe.log"
  for preset in teacher student-fast; do
    python3 $tree/benchmarks/fast_inference_paths.py --preset $preset --device cuda --repeats 5 \
        --paths eager,folded,channels-last,amp,batch16,compile 2>&1 | grep -v Warning | tee -a "$out/paths.log"
  done
elif [ "$phase" = long ]; then
  lim=${LIMIT:-470}
  timeout $lim $abl --out /tmp/long --seeds 0 1 2 --jobs 9 --methods ds dmd --settings full t1 \
      --datasets hippocampus3d --scale 8 --student student-fast > "$out/long.log" 2>&1 &
  timeout $lim $abl --out /tmp/t1fast --seeds 0 1 2 --jobs 3 --settings t1 --methods dmd --datasets chaos --scale 4 \
      --student student-fast > "$out/t1fast.log" 2>&1 &
  timeout $lim $abl --out /tmp/t1 --seeds 0 1 2 --jobs 6 --settings t1 --methods dmd --scale 4 --student student \
      > "$out/t1.log" 2>&1 &
  wait
  tail -n 25 "$out/long.log" "$out/t1fast.log" "$out/t1.log"
  python3 - <<'PY'
import glob, torch
for f in glob.glob("/tmp/*/runs/*/last.pt"):
    ck = torch.load(f, weights_only=False)
    ck.pop("train_state", None)
    for d in (ck, ck.get("heads") or {}):
        if isinstance(d.get("state_dict"), dict):
            d["state_dict"] = {n: t.half() if t.is_floating_point() else t for n, t in d["state_dict"].items()}
    torch.save(ck, f)
PY
  tar -czf "$out/results.tgz" -C /tmp $(cd /tmp && ls -d long/jobs t1fast/jobs t1/jobs */runs/*/last.pt */runs/*/events.jsonl 2>/dev/null)
  ls -la "$out"
else
  scale=${SCALE:-5}
  timeout ${LIMIT:-500} $abl --out /tmp/fast --seeds 0 1 2 --jobs 10 --methods ds dmd --settings full tiny \
      --scale "$scale" --student student-fast --tiny-student student-fast-tiny > "$out/fast.log" 2>&1 &
  timeout ${LIMIT:-500} $abl --out /tmp/default --seeds 0 1 2 --jobs 5 --methods ds dmd --settings full \
      --scale "$scale" --student student > "$out/default.log" 2>&1 &
  wait
  tail -n 40 "$out/fast.log" "$out/default.log"
  tar -czf "$out/results.tgz" -C /tmp fast/jobs default/jobs $(cd /tmp && ls -d fast/runs/*/last.pt default/runs/*/last.pt fast/runs/*/events.jsonl default/runs/*/events.jsonl 2>/dev/null)
  ls -la "$out"
fi
