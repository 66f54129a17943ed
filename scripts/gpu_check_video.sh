#!/usr/bin/env bash
# The video tests on a GPU, with live VRAM readings of the lease (issue 18).
#
#   bash scripts/gpu_check_video.sh            from the repository root
#
# Runs the video tests with BATOS_VIDEO_DEVICE=cuda, then one hand-over with
# torch.cuda.mem_get_info read at each stage: small LLM loaded, lease taken
# (LLM evicted), tiny FramePack loaded, a 3-section clip made, pipeline
# unloaded, lease released, first LLM token (lazy reload). Prints a compact
# JSON summary, also to $OUT/video_gpu.json when $OUT is set. Nothing is
# downloaded: the models are tiny, random and built here.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export BATOS_VIDEO_DEVICE=${BATOS_VIDEO_DEVICE:-cuda}
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
WORK=$(mktemp -d)
REPORT=${OUT:-$WORK}/video_gpu.json

TESTS=(tests/unit/test_video_schedule.py tests/unit/test_video_precision.py
       tests/unit/test_video_job.py tests/integration/test_video_pipeline.py
       tests/integration/test_video_lease.py tests/integration/test_video_actor.py
       tests/unit/test_video_imports.py)
# --noconftest: these need none of the kernel fixtures (pyzmq, a served kernel).
$PY -m pytest -q -p no:cacheprovider --noconftest -o addopts="" \
    --junitxml="$WORK/junit.xml" "${TESTS[@]}" 2>&1 | tail -25
TESTS_RC=${PIPESTATUS[0]}
# The served-kernel tests (batos serve + the CLI on CUDA) need the kernel's and
# the embedder's packages as well; run them when those import.
# The kernel finds the actors through entry points: where batos is not installed,
# a dist-info made from pyproject.toml on PYTHONPATH stands in for it.
if ! $PY -c "from importlib.metadata import entry_points as e; assert e(group='batos.actors')" 2>/dev/null; then
  mkdir -p "$WORK/site/batos-0.0.0.dist-info"
  $PY - "$WORK/site/batos-0.0.0.dist-info" <<'PY'
import sys, tomllib
from pathlib import Path
target = Path(sys.argv[1])
groups = tomllib.loads(Path("pyproject.toml").read_text())["project"]["entry-points"]
(target / "METADATA").write_text("Metadata-Version: 2.1\nName: batos\nVersion: 0.0.0\n")
(target / "entry_points.txt").write_text("".join(
    f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for g, eps in groups.items()))
PY
  export PYTHONPATH="$WORK/site:$PYTHONPATH"
fi
KERNEL_RC=-1
if $PY -c "import zmq, msgpack, typer, rich, sentence_transformers, ZODB" 2>/dev/null; then
  $PY -m pytest -q -p no:cacheprovider -o addopts="" --junitxml="$WORK/junit_kernel.xml" \
      tests/integration/test_video_job.py 2>&1 | tail -25
  KERNEL_RC=${PIPESTATUS[0]}
else
  echo "served-kernel video tests not run: $($PY -c "import zmq, msgpack, typer, rich, sentence_transformers, ZODB" 2>&1 | tail -1)"
fi
[ "$TESTS_RC" = 0 ] && [ "$KERNEL_RC" -gt 0 ] && TESTS_RC=$KERNEL_RC

$PY - "$WORK" "$REPORT" "$TESTS_RC" "$KERNEL_RC" <<'PY' 2>&1 | grep -v "torchvision"
import json, sys, time, xml.etree.ElementTree as ET
from pathlib import Path
import torch
from PIL import Image

work, report = Path(sys.argv[1]), Path(sys.argv[2])
summary = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
           "torch": torch.__version__, "tests_rc": int(sys.argv[3]),
           "kernel_tests_rc": int(sys.argv[4])}  # -1: not run (packages missing)
for name in ("junit.xml", "junit_kernel.xml"):
    if not (work / name).exists():
        continue
    suite = ET.parse(work / name).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    summary[name] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    summary[name]["failed"] = [c.get("classname", "") + "::" + c.get("name", "")
                               for c in suite.iter("testcase")
                               if c.find("failure") is not None or c.find("error") is not None]
MB = 1 << 20
stages = []
def mark(stage, **extra):
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    stages.append({"stage": stage, "used_mb": round((total - free) / MB, 1),
                   "allocated_mb": round(torch.cuda.memory_allocated() / MB, 1), **extra})
try:
    torch.set_num_threads(1)
    from actors import llm
    from actors.engine import Engine
    from actors.video import schedule as sch
    from actors.video.lease import VramLease
    from actors.video.pipeline import SectionPipeline
    from tests.helpers.tiny_video import PROMPT_TEMPLATE, build_tiny_video_pipeline
    from tests.helpers.video import build_small_llm_dir
    request = llm.GenerationRequest(messages=(llm.ChatMessage("user", "a fox"),),
                                    temperature=0.0, max_new_tokens=4)
    mark("start")
    engine = Engine.load(build_small_llm_dir(work / "llm", hidden=768, layers=6), device="cuda")
    engine.install(); engine.generate(request); mark("llm loaded")
    lease = VramLease(); t = time.perf_counter()
    handover = lease.acquire("gpu-check", "cuda")
    mark("lease: llm evicted", seconds=round(time.perf_counter() - t, 4),
         handover=handover.as_dict() if handover else None)
    t = time.perf_counter()
    pipe = SectionPipeline.place(build_tiny_video_pipeline(), "cuda")
    mark("video pipeline loaded", seconds=round(time.perf_counter() - t, 4), offloaded=pipe.offloaded)
    t = time.perf_counter()
    cond = pipe.condition("a fox", Image.new("RGB", (32, 32)), 32, 32, 1, template=PROMPT_TEMPLATE)
    done = {}
    for s in sch.schedule(3, 7.0, 0.7):
        c = sch.neighbours(s.index, done)
        done[s.index] = pipe.section(cond, left=done.get(c.left), left_gap=c.left_gap,
                                     right=done.get(c.right), right_gap=c.right_gap,
                                     guidance=s.guidance, steps=2, window=2, seed=1 + s.index)
    frames = pipe.decode(cond.image_latents, [done[i] for i in range(3)])
    mark("clip made", seconds=round(time.perf_counter() - t, 4), frames=list(frames.shape))
    t = time.perf_counter(); pipe.unload(); mark("video pipeline unloaded", seconds=round(time.perf_counter() - t, 4))
    lease.release("gpu-check"); t = time.perf_counter()
    llm.generator().generate(request)
    mark("first LLM pass after release (reload)", seconds=round(time.perf_counter() - t, 4),
         reloads=lease.reloads)
except Exception as exc:  # report what broke, keep the readings taken so far
    summary["readings_error"] = f"{type(exc).__name__}: {exc}"
summary["vram"] = stages
text = json.dumps(summary, indent=1)
report.parent.mkdir(parents=True, exist_ok=True)
report.write_text(text)
print(text)
PY
echo "report: $REPORT"
exit "$TESTS_RC"
