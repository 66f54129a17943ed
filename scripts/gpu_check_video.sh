#!/usr/bin/env bash
# The video tests on a GPU, with live VRAM readings of the lease (issue 18).
#
#   bash scripts/gpu_check_video.sh            from the repository root
#
# 1. Installs what it needs from what was carried, when VIDEO_GPU_CARRY names
#    a folder: site.tar.xz (a site-packages tarball: diffusers, peft, ZODB...)
#    and whl-video/*.whl (imageio-ffmpeg, zope.index, and typer, click, rich at
#    the versions the CLI is tested with), into /tmp/site. (Not BATOS_*: the
#    kernel reads every BATOS_<SECTION>_<KEY> as a setting and refuses others.)
# 2. Samples nvidia-smi's memory.used every 500 ms for the whole run
#    ($OUT/vram_samples.csv).
# 3. Runs the video tests with TEST_VIDEO_DEVICE=cuda ($OUT/pytest_video.txt,
#    the full output).
# 4. One hand-over with torch.cuda.mem_get_info read at each stage: small LLM
#    loaded, lease taken (LLM evicted), tiny FramePack loaded, a 3-section clip
#    made (with a preview), pipeline unloaded, lease released, first LLM token
#    (lazy reload) ($OUT/video_gpu.json).
# 5. The served-kernel tests (`batos serve` + the CLI on CUDA): full output in
#    $OUT/pytest_kernel.txt, every kernel's log in $OUT/kernel_logs.txt.
#
# KERNEL_S bounds step 5 (seconds, default 170), KERNEL_TEST_S each of its tests
# (pytest-timeout; default none); VIDEO_CHECK_STEPS picks steps 3-5 (default
# "tests readings kernel"); VIDEO_CHECK_K narrows the
# tests (pytest -k) for a dry run on a CPU:
#   OUT=/tmp/o TEST_VIDEO_DEVICE=cpu VIDEO_CHECK_K=blob PYTHON=.venv/bin/python \
#       bash scripts/gpu_check_video.sh
# Nothing is downloaded: the models are tiny, random and built here.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
WORK=$(mktemp -d)
# The tests' device (not BATOS_VIDEO_DEVICE: tests/conftest.py drops every BATOS_*
# variable, so the served-kernel tests ran their CLI jobs on the CPU with it).
export TEST_VIDEO_DEVICE=${TEST_VIDEO_DEVICE:-cuda}
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONUNBUFFERED=1
K=(); [ -n "${VIDEO_CHECK_K:-}" ] && K=(-k "$VIDEO_CHECK_K")

# -- 1. packages from what was carried -------------------------------------------------
if [ -n "${VIDEO_GPU_CARRY:-}" ]; then
  mkdir -p /tmp/site
  tar -xJf "$VIDEO_GPU_CARRY/site.tar.xz" -C /tmp/site
  # unzipped, not `pip install --target --upgrade`: that replaces a whole top-level
  # folder, and zope.index would take zope.interface's `zope/` with it
  for wheel in "$VIDEO_GPU_CARRY"/whl-video/*.whl; do $PY -m zipfile -e "$wheel" /tmp/site; done
  chmod +x /tmp/site/imageio_ffmpeg/binaries/ffmpeg* 2>/dev/null
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# The kernel finds the actors through entry points: where batos is not installed,
# a dist-info made from pyproject.toml on PYTHONPATH stands in for it.
if ! $PY -c "from importlib.metadata import entry_points as e; assert e(group='batos.actors')" \
    2>/dev/null; then
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
{ date -u; nvidia-smi 2>&1 | head -15
  $PY -c "import torch, diffusers, transformers, imageio_ffmpeg as f; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'ffmpeg', f.get_ffmpeg_version())"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# -- 2. live VRAM samples ---------------------------------------------------------------
SAMPLER=
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -lms 500 \
      > "$OUT/vram_samples.csv" 2>&1 &
  SAMPLER=$!
fi

# -- 3. the video tests on the device ------------------------------------------------------
TESTS=(tests/unit/test_video_schedule.py tests/unit/test_video_precision.py
       tests/unit/test_video_job.py tests/unit/test_video_handover.py
       tests/integration/test_video_pipeline.py tests/integration/test_video_lease.py
       tests/integration/test_video_actor.py tests/unit/test_video_imports.py)
# --noconftest: these need none of the kernel fixtures (a served kernel).
STEPS=${VIDEO_CHECK_STEPS:-tests readings kernel}
TESTS_RC=0
if [[ " $STEPS " == *" tests "* ]]; then
echo "== video tests ($(date -u +%T))"
timeout "${VIDEO_S:-120}" $PY -m pytest -q -rfE -p no:cacheprovider --noconftest -o addopts="" \
    --junitxml="$WORK/junit.xml" "${K[@]}" "${TESTS[@]}" > "$OUT/pytest_video.txt" 2>&1
TESTS_RC=$?
tail -4 "$OUT/pytest_video.txt"
fi

# -- 4. one hand-over, read stage by stage ------------------------------------------------
if [[ " $STEPS " == *" readings "* ]]; then
echo "== readings ($(date -u +%T))"
timeout 90 $PY - "$WORK" "$OUT/video_gpu.json" "$TESTS_RC" <<'PY' 2>&1 | grep -v "torchvision"
import json, sys, time, xml.etree.ElementTree as ET
from pathlib import Path
import torch
from PIL import Image

work, report = Path(sys.argv[1]), Path(sys.argv[2])
cuda = torch.cuda.is_available()
summary = {"device": torch.cuda.get_device_name(0) if cuda else "none",
           "torch": torch.__version__, "tests_rc": int(sys.argv[3])}
if (work / "junit.xml").exists():
    suite = ET.parse(work / "junit.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    summary["tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors")}
    summary["failed"] = [c.get("classname", "") + "::" + c.get("name", "")
                         for c in suite.iter("testcase")
                         if c.find("failure") is not None or c.find("error") is not None]
MB = 1 << 20
stages = []
def mark(stage, **extra):
    if cuda:
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info()
        extra = {"used_mb": round((total - free) / MB, 1),
                 "allocated_mb": round(torch.cuda.memory_allocated() / MB, 1), **extra}
    stages.append({"stage": stage, **extra})
device = "cuda" if cuda else "cpu"
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
    engine = Engine.load(build_small_llm_dir(work / "llm", hidden=768, layers=6), device=device)
    engine.install(); engine.generate(request); mark("llm loaded")
    lease = VramLease(); t = time.perf_counter()
    handover = lease.acquire("gpu-check", device)
    mark("lease: llm evicted", seconds=round(time.perf_counter() - t, 4),
         handover=handover.as_dict() if handover else None)
    t = time.perf_counter()
    pipe = SectionPipeline.place(build_tiny_video_pipeline(), device)
    mark("video pipeline loaded", seconds=round(time.perf_counter() - t, 4), offloaded=pipe.offloaded)
    t = time.perf_counter()
    cond = pipe.condition("a fox", Image.new("RGB", (32, 32)), 32, 32, 1, template=PROMPT_TEMPLATE)
    done = {}
    for s in sch.schedule(3, 7.0, 0.7):
        c = sch.neighbours(s.index, done)
        done[s.index] = pipe.section(cond, left=done.get(c.left), left_gap=c.left_gap,
                                     right=done.get(c.right), right_gap=c.right_gap,
                                     guidance=s.guidance, steps=2, window=2, seed=1 + s.index)
    preview = pipe.preview(done[0])
    frames = pipe.decode(cond.image_latents, [done[i] for i in range(3)])
    mark("clip made", seconds=round(time.perf_counter() - t, 4), frames=list(frames.shape),
         preview_bytes=len(preview))
    t = time.perf_counter(); pipe.unload(); mark("video pipeline unloaded", seconds=round(time.perf_counter() - t, 4))
    lease.release("gpu-check"); t = time.perf_counter()
    llm.generator().generate(request)
    mark("first LLM pass after release (reload)", seconds=round(time.perf_counter() - t, 4),
         reloads=lease.reloads)
except Exception as exc:  # report what broke, keep the readings taken so far
    import traceback
    summary["readings_error"] = f"{type(exc).__name__}: {exc}"
    summary["readings_traceback"] = traceback.format_exc()
summary["vram"] = stages
text = json.dumps(summary, indent=1)
report.write_text(text)
print(text)
PY
fi

# -- 5. the served-kernel tests ------------------------------------------------------------
echo "== served-kernel tests ($(date -u +%T))"
KERNEL_RC=-1
if [[ " $STEPS " != *" kernel "* ]]; then
  echo "served-kernel tests not asked for" > "$OUT/pytest_kernel.txt"
elif $PY -c "import zmq, msgpack, typer, rich, sentence_transformers, ZODB, zope.index" \
    > "$OUT/pytest_kernel.txt" 2>&1; then
  timeout "${KERNEL_S:-170}" $PY -m pytest -q -rfE -p no:cacheprovider -o addopts="" \
      --basetemp="$WORK/kernel" --timeout="${KERNEL_TEST_S:-0}" "${K[@]}" \
      tests/integration/test_video_job.py >> "$OUT/pytest_kernel.txt" 2>&1
  KERNEL_RC=$?
else
  echo "served-kernel video tests not run: packages missing (see pytest_kernel.txt)"
fi
tail -4 "$OUT/pytest_kernel.txt"
for log in $(find "$WORK/kernel" -name 'serve-*.log' 2>/dev/null | sort); do
  echo "===== $log"; cat "$log"
done > "$OUT/kernel_logs.txt"
echo "kernel logs: $(grep -c '^=====' "$OUT/kernel_logs.txt") files, $(wc -c < "$OUT/kernel_logs.txt") bytes"

[ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
echo "rc: video tests $TESTS_RC, served-kernel tests $KERNEL_RC; report in $OUT"
[ "$TESTS_RC" = 0 ] && [ "$KERNEL_RC" -gt 0 ] && TESTS_RC=$KERNEL_RC
exit "$TESTS_RC"
