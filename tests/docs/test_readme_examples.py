"""The README's examples, read from README.md itself and run as a reader runs them, so the front
page cannot rot.

Every ```sh / ```python block of the README carries a mark on the line before it, an HTML comment
the rendered page does not show: ``<!-- example: NAME -->`` (run here, on the bundled demo model on
a CPU) or ``<!-- example: NAME, not run: WHY -->`` (needs a GPU, TensorRT, an installation ...).
The runnable ones run in order in a temporary folder laid out as a clone's root (``scripts/`` and
``cornernet_deploy/`` linked in, everything they write lands there), each must exit 0 and leave
its key files (``EXPECTED``). A runnable block that disappears, or a new block without a mark,
fails.
"""
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARK = re.compile(r"^<!-- example: (?P<name>[a-z0-9-]+)(?:, not run: (?P<why>[^>]*[^ >]))? -->$")
FENCE = re.compile(r"^```(?P<lang>\w*)\s*$")
EXAMPLE_LANGUAGES = ("sh", "python")

# The runnable examples, in README order, and what each leaves behind (paths under the clone).
EXPECTED = {
    "demo": ["demo_output/demo_model.onnx", "demo_output/demo_input.png",
             "demo_output/demo_detections.png", "demo_output/demo_detections.json"],
    "info": [],
    "export": ["export/demo_topk.onnx"],
    "infer": ["detections/detections.json", "detections/images.json"],
    "python-api": [],
    "stream": ["clip.mp4", "streams/0-clip.mp4", "streams/0-clip.jsonl", "streams/summary.json"],
    "eval": ["runs/demo_model/data/val/annotations.json", "eval.json"],
    "quantize": ["runs/demo_model/data/train/annotations.json", "demo_output/demo_model_int8.onnx"],
    "compare": ["compare.json"],
    "profile": ["profile.json", "profile.png"],
    "benchmark": ["bench.json"],
    "triton": ["triton_repo/README.md", "triton_repo/shapes/config.pbtxt",
               "triton_repo/shapes/1/model.onnx"],
    "train": ["runs/tiny/last.pt", "runs/tiny/config.json", "runs/tiny/train_log.jsonl"],
}


@dataclass
class Example:
    name: str
    lang: str
    code: str
    line: int
    why_not_run: Optional[str]


def read_examples(text: str):
    """(examples, problems): every fenced sh/python block with its mark; a problem for each block
    without one, a mark without a block, or a name used twice."""
    lines = text.splitlines()
    examples, problems, pending = [], [], None
    i = 0
    while i < len(lines):
        mark = MARK.match(lines[i].strip())
        if mark:
            if pending:
                problems.append(f"line {pending[2]}: mark '{pending[0]}' is not followed by a code block")
            pending = (mark["name"], mark["why"], i + 1)
            i += 1
            continue
        fence = FENCE.match(lines[i])
        if fence and fence["lang"]:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            code = "\n".join(lines[i + 1:end]) + "\n"
            if fence["lang"] in EXAMPLE_LANGUAGES:
                if pending is None:
                    problems.append(f"line {i + 1}: a ```{fence['lang']} block without an example mark")
                else:
                    examples.append(Example(pending[0], fence["lang"], code, i + 1, pending[1]))
            pending = None
            i = end + 1
            continue
        if lines[i].strip() and pending:
            problems.append(f"line {pending[2]}: mark '{pending[0]}' is not followed by a code block")
            pending = None
        i += 1
    if pending:
        problems.append(f"line {pending[2]}: mark '{pending[0]}' is not followed by a code block")
    names = [e.name for e in examples]
    problems += [f"example name '{n}' is used twice" for n in sorted({n for n in names if names.count(n) > 1})]
    return examples, problems


def test_every_example_block_is_marked_and_the_runnable_ones_are_the_expected_ones():
    examples, problems = read_examples(README.read_text())
    assert problems == []
    runnable = [e.name for e in examples if e.why_not_run is None]
    assert runnable == list(EXPECTED), (
        "the README's runnable examples changed: update EXPECTED (what each must write) with them")


def test_the_quickstart_set_up_is_the_one_ci_runs():
    examples = {e.name: e for e in read_examples(README.read_text())[0]}
    ci = (ROOT / ".ci" / "run").read_text()
    install = '-c constraints.txt -e ".[torch,test,serve,fast]"'
    assert f"pip install {install}" in examples["quickstart-setup"].code and install in ci
    assert "scripts/test.sh" in examples["quickstart-tests"].code
    assert ci.rstrip().endswith("scripts/test.sh")


def test_the_marks_are_read_as_written():
    text = ("<!-- example: a -->\n```sh\necho a\n```\n"
            "<!-- example: b, not run: needs a GPU -->\n```python\nprint(1)\n```\n"
            "```text\nnot an example\n```\n")
    examples, problems = read_examples(text)
    assert problems == []
    assert [(e.name, e.lang, e.code, e.why_not_run) for e in examples] == [
        ("a", "sh", "echo a\n", None), ("b", "python", "print(1)\n", "needs a GPU")]
    _, problems = read_examples("```sh\necho unmarked\n```\n<!-- example: c -->\n\nsome text\n")
    assert problems == ["line 1: a ```sh block without an example mark",
                        "line 4: mark 'c' is not followed by a code block"]


@pytest.mark.slow
def test_the_readme_examples_run_on_the_demo_model(tmp_path):
    from cornernet_deploy.models.checkpoint import read_checkpoint

    examples = [e for e in read_examples(README.read_text())[0] if e.why_not_run is None]
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("scripts", "cornernet_deploy"):   # what the examples read from a clone
        (clone / name).symlink_to(ROOT / name, target_is_directory=True)
    bin_dir = str(Path(sys.executable).parent)     # cornernet-deploy and python of this venv
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
    outputs = {}
    for example in examples:
        command = ([sys.executable, "-c", example.code] if example.lang == "python"
                   else ["bash", "-euo", "pipefail", "-c", example.code])
        done = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (f"README example '{example.name}' (line {example.line}) exited "
                                      f"{done.returncode}:\n{example.code}\n{done.stderr[-3000:]}")
        missing = [p for p in EXPECTED[example.name] if not (clone / p).is_file()]
        assert not missing, f"README example '{example.name}' did not write {missing}"
        outputs[example.name] = done.stdout

    # what the README says the examples show
    assert "Detections(n=" in outputs["python-api"]
    metrics = json.loads((clone / "eval.json").read_text())
    recorded = read_checkpoint(ROOT / "cornernet_deploy/assets/demo_squeeze_shapes.pt")["val_metrics"]
    assert metrics["images"] == recorded["images"] == 200
    # the export through ONNX Runtime scores as the checkpoint did through PyTorch when it was trained
    assert metrics["AP"] == pytest.approx(recorded["AP"], abs=2e-3)
    assert metrics["AP50"] == pytest.approx(recorded["AP50"], abs=2e-3)
    assert "PASS: B agrees with A within the fp32 tolerances" in outputs["compare"]
    assert "within the int8 tolerances" in outputs["compare"]
    report = json.loads((clone / "profile.json").read_text())
    assert [r["backend"] for r in report["results"]] == ["torch", "onnxruntime", "onnxruntime"]
    assert [r["precision"] for r in report["results"]] == ["fp32", "fp32", "int8"]
    drawings = [im["drawing"] for im in json.loads((clone / "detections/images.json").read_text())]
    assert drawings and all((clone / "detections" / d).is_file() for d in drawings)
    # the stream: every frame of the 50-frame clip, one JSON line each
    summary = json.loads((clone / "streams/summary.json").read_text())
    assert [(s["status"], s["frames_processed"]) for s in summary["streams"]] == [("ended", 50)]
    assert len((clone / "streams/0-clip.jsonl").read_text().splitlines()) == 50
    # the benchmark: its three formats in order, the reference runs, each row runs or says why not
    bench = json.loads((clone / "bench.json").read_text())
    assert [r["format"] for r in bench["rows"]] == ["onnxruntime-fp32", "openvino-fp32", "openvino-int8"]
    assert bench["settings"]["reference"] == "onnxruntime-fp32" and bench["rows"][0]["status"] == "ok"
    assert all(r["status"] == "ok" or r["reason"] for r in bench["rows"])
