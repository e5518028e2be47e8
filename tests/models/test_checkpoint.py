"""Checkpoint loading: official layouts, our format, and clear errors for every bad file."""
import pickle

import pytest
import torch

from cornernet_deploy.models import CheckpointError, build_model, load_checkpoint, save_checkpoint
from cornernet_deploy.models.checkpoint import spec_from_checkpoint

torch.set_num_threads(1)

TINY = dict(num_classes=3, width=0.125)


def tiny(arch="cornernet-squeeze", **kw):
    return build_model(arch, **{**TINY, **kw})


def official_file(model, path, prefix="module.", drop_tracked=False):
    state = {prefix + k: v.clone() for k, v in model.state_dict().items()
             if not (drop_tracked and k.endswith("num_batches_tracked"))}
    torch.save(state, path)
    return state


def randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.dtype.is_floating_point:
                t.copy_(torch.rand(t.shape, generator=g))


@pytest.mark.parametrize("drop_tracked", [False, True])
def test_official_module_prefixed_file_loads(tmp_path, drop_tracked):
    src = tiny()
    randomize(src)
    official_file(src, tmp_path / "ck.pkl", drop_tracked=drop_tracked)
    dst = tiny()
    load_checkpoint(dst, tmp_path / "ck.pkl")
    for k, v in src.state_dict().items():
        if not (drop_tracked and k.endswith("num_batches_tracked")):
            assert torch.equal(dst.state_dict()[k], v), k


def test_original_cornernet_repo_names_are_renamed(tmp_path, official_keys):
    # the original princeton-vl/CornerNet release uses module.kps / module.tl_cnvs / ...
    renames = {"module.hg.pre.": "module.pre.", "module.hg.hgs.": "module.kps.",
               "module.hg.cnvs_.": "module.cnvs_.", "module.hg.inters_.": "module.inters_.",
               "module.hg.cnvs.": "module.cnvs.", "module.hg.inters.": "module.inters.",
               "module.tl_modules.": "module.tl_cnvs.", "module.br_modules.": "module.br_cnvs.",
               "module.tl_offs.": "module.tl_regrs.", "module.br_offs.": "module.br_regrs."}
    src = tiny("cornernet", levels=2)
    randomize(src, 1)
    state = {}
    for k, v in src.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue  # PyTorch 0.4.0 had none
        name = "module." + k
        for new, old in renames.items():
            if name.startswith(new):
                name = old + name[len(new):]
                break
        state[name] = v
    # the naming scheme really is the original repo's (checked against its full key list)
    original = {k for k, _, _ in official_keys["cornernet-original-repo"]["keys"]}
    assert {k.split(".")[1] for k in state} <= {k.split(".")[1] for k in original}
    torch.save(state, tmp_path / "orig.pkl")
    dst = tiny("cornernet", levels=2)
    load_checkpoint(dst, tmp_path / "orig.pkl")
    assert torch.equal(dst.tl_offs[1][1].weight, src.tl_offs[1][1].weight)


def test_own_format_round_trip_keeps_the_variant(tmp_path):
    src = tiny(levels=2, stacks=1)
    randomize(src, 2)
    save_checkpoint(src, tmp_path / "own.pt", iteration=7)
    spec = spec_from_checkpoint(tmp_path / "own.pt")
    assert spec == src.spec
    dst = build_model(spec)
    meta = load_checkpoint(dst, tmp_path / "own.pt")
    assert meta["iteration"] == 7 and meta["arch"] == "cornernet-squeeze"
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in src.state_dict().items())


def test_wrong_architecture_names_keys_and_the_likely_architecture(tmp_path):
    official_file(build_model("cornernet-saccade", num_classes=80, width=0.125), tmp_path / "sac.pkl")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(build_model("cornernet-squeeze", num_classes=80, width=0.125), tmp_path / "sac.pkl")
    msg = str(err.value)
    assert "cornernet-squeeze" in msg and "missing keys" in msg and "unexpected keys" in msg
    assert "looks like a 'cornernet-saccade' checkpoint" in msg
    assert "\n" not in msg and len(msg) < 800


def test_shape_mismatch_is_reported(tmp_path):
    official_file(tiny(num_classes=4), tmp_path / "c4.pkl")
    with pytest.raises(CheckpointError, match=r"8 shape mismatches: .*heats\.0\.1\.bias \(4,\) vs \(3,\)"):
        load_checkpoint(tiny(), tmp_path / "c4.pkl")


def test_corrupt_and_foreign_files_give_clear_errors(tmp_path):
    (tmp_path / "text.pkl").write_text("hello, not a checkpoint")
    (tmp_path / "trunc.pkl").write_bytes(b"PK\x03\x04" + b"\x00" * 20)
    good = tmp_path / "good.pkl"
    official_file(tiny(), good)
    (tmp_path / "half.pkl").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    torch.save([1, 2, 3], tmp_path / "list.pkl")
    for name in ("text.pkl", "trunc.pkl", "half.pkl", "list.pkl", "missing.pkl"):
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(tiny(), tmp_path / name)
        assert "\n" not in str(err.value)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_never_executed(tmp_path, capsys):
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    with pytest.raises(CheckpointError, match="refusing to run pickled code"):
        load_checkpoint(tiny(), tmp_path / "evil.pkl")
    assert "pwned" not in capsys.readouterr().out


@pytest.mark.parametrize("wrapper", ["model", "model_state_dict"])
def test_training_script_wrapper_layouts_load(tmp_path, wrapper):
    # {"model": state_dict, "optimizer": ..., "epoch": ...} is how most training scripts save
    src = tiny()
    randomize(src, 3)
    state = {"module." + k: v.clone() for k, v in src.state_dict().items()}
    torch.save({wrapper: state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 12},
               tmp_path / "wrapped.pth")
    dst = tiny()
    load_checkpoint(dst, tmp_path / "wrapped.pth")
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in src.state_dict().items())


@pytest.mark.parametrize("arch", ["cornernet", "cornernet-squeeze", "cornernet-saccade"])
def test_a_spec_written_by_a_newer_toolkit_still_loads(tmp_path, arch):
    """Checkpoints and export metadata carry the spec as a dict (contract.arch.spec_to_dict); a field a later
    version adds is ignored by both readers instead of failing the load."""
    from cornernet_deploy.contract.metadata import parse_metadata
    from cornernet_deploy.contract.metadata import build_metadata
    from cornernet_deploy.contract.arch import get_arch, spec_from_dict, spec_to_dict
    official = get_arch(arch)
    assert spec_from_dict(spec_to_dict(official)) == official
    model = tiny(arch)
    save_checkpoint(model, tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["spec"]["a_field_of_version_9"] = [1, 2]
    payload["spec"]["test"]["another_new_setting"] = 0.5
    torch.save(payload, tmp_path / "newer.pt")
    assert spec_from_checkpoint(tmp_path / "newer.pt") == model.spec
    metadata = build_metadata(model.spec, model.spec.input_size, 1, "none", "plugin", "fp32", False)
    metadata["spec"]["a_field_of_version_9"] = [1, 2]
    assert parse_metadata(metadata).spec == model.spec


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_checkpoints_of_other_float_types_load_as_float32(tmp_path, dtype):
    """fp16/bf16/fp64 checkpoints (a half-precision fine-tune, a double export) load into the float32
    model: each weight is the file's value converted to float32, and the model runs."""
    torch.manual_seed(3)
    src = tiny(levels=2, stacks=1)               # initialised weights: outputs of a sane scale
    state = {k: (v.to(dtype) if v.dtype.is_floating_point else v) for k, v in src.state_dict().items()}
    torch.save(state, tmp_path / "typed.pth")
    dst = tiny(levels=2, stacks=1)
    load_checkpoint(dst, tmp_path / "typed.pth")
    for k, v in dst.state_dict().items():
        if v.dtype.is_floating_point:
            assert v.dtype == torch.float32
            assert torch.equal(v, state[k].float()), k      # exactly the file's value, widened or rounded once
    with torch.no_grad():
        heads = dst.eval()(torch.zeros(1, 3, 63, 63))
    assert all(torch.isfinite(h).all() for h in heads.values())
