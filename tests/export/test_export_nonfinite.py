"""Issue 21 items 5 and 20, `export`: non-finite weights are refused before tracing, an export
computing NaN never "verifies" (NaN == NaN is not agreement), the verification ends in one
PASS/FAIL line naming its tolerance profile, and the export says what the file takes."""
from __future__ import annotations

import math

import pytest
import torch

from cornernet_deploy.cli import main
from cornernet_deploy.commands.demo import DEMO_CHECKPOINT
from cornernet_deploy.exporter import (ExportWrapper, VerificationError, attach_contract, plan_export,
                                       report_verification, trace_to_onnx, verify_against_torch)
from cornernet_deploy.models import build_model

torch.set_num_threads(2)


def checkpoint_with(path, key, change):
    ck = torch.load(DEMO_CHECKPOINT, map_location="cpu", weights_only=True)
    ck["state_dict"][key] = change(ck["state_dict"][key].clone())
    torch.save(ck, path)
    return path


def first_inf(t):
    t.view(-1)[0] = math.inf
    return t


def test_a_checkpoint_with_an_infinite_weight_is_refused_before_tracing(tmp_path, capsys):
    ck = checkpoint_with(tmp_path / "inf.pt", "hg.pre.0.conv.weight", first_inf)
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(ck), "--output", str(out)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and "hg.pre.0.conv.weight (1 of" in err and "NaN or infinite" in err, err
    assert "tracing" not in captured.out and not out.exists()


def test_verification_fails_an_export_that_computes_nan_on_both_sides(tmp_path):
    """The weight check stands in front of it in `export`; the verification is the named step
    itself, run on a network with an infinite weight, whose outputs are NaN in PyTorch and in
    ONNX Runtime alike (the old check counted that as agreement: max error 0)."""
    model = build_model("cornernet-squeeze", num_classes=2, width=0.125, levels=2).eval()
    with torch.no_grad():
        first_inf(model.state_dict()["hg.pre.0.conv.weight"])
    plan = plan_export(None, None, tmp_path / "m.onnx", model=model, input_size="127x127", batch=1,
                       dynamic_batch=False, dynamic_size=False, opset=17, corner_pool="plugin",
                       decode="none", precision="fp32")
    onnx_model, wrapper, dummy = trace_to_onnx(plan, model, None)
    attach_contract(onnx_model, plan)
    report = verify_against_torch(onnx_model, wrapper, dummy, plan.output_names, plan.spec, "fp32")
    assert any("values from ONNX Runtime are NaN or infinite" in f for f in report["failures"]), report["failures"]
    assert any("values from PyTorch are NaN or infinite" in f for f in report["failures"])


def test_verification_ends_in_one_verdict_line_and_the_export_says_what_the_file_takes(tmp_path, capsys):
    assert main(["export", "--checkpoint", str(DEMO_CHECKPOINT), "--output", str(tmp_path / "d.onnx")]) == 0
    out = capsys.readouterr().out
    assert "verification: PASS against the fp32 tolerance profile of `compare` (per element " \
           "|onnx - torch| <= 0.0001 + 0.0001*|torch|, outputs finite)" in out, out
    assert "it takes any height and width up to 16384 px (dynamic size), batch 1" in out
    assert main(["export", "--checkpoint", str(DEMO_CHECKPOINT), "--output", str(tmp_path / "f.onnx"),
                 "--input-size", "127x255", "--dynamic-batch", "--no-verify"]) == 0
    out = capsys.readouterr().out
    assert "it takes 127x255 inputs only (fixed size), batch of any size (dynamic)" in out
    assert "verification:" not in out


def test_a_failed_verification_prints_fail_before_its_one_line_error(tmp_path):
    """A real verification of a graph against another model (same architecture, other weights)."""
    model = build_model("cornernet-squeeze", num_classes=2, width=0.125, levels=2).eval()
    plan = plan_export(None, None, tmp_path / "m.onnx", model=model, input_size="127x127", batch=1,
                       dynamic_batch=False, dynamic_size=False, opset=17, corner_pool="plugin",
                       decode="none", precision="fp32")
    onnx_model, _, dummy = trace_to_onnx(plan, model, None)
    attach_contract(onnx_model, plan)
    other = ExportWrapper(build_model(model.spec).eval(), "none")
    report = verify_against_torch(onnx_model, other, dummy, plan.output_names, plan.spec, "fp32")
    lines = []
    with pytest.raises(VerificationError, match="differs from PyTorch beyond the fp32 tolerance"):
        report_verification(report, lines.append)
    assert lines[-1].startswith("verification: FAIL against the fp32 tolerance profile of `compare`")
