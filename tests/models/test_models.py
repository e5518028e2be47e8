"""Reference models against the official architecture: parameter counts, key layout, head shapes.

The official numbers and key lists (tests/data) come from instantiating the official classes.
"""
import pytest
import torch

from cornernet_deploy.models import (CornerNet, build_model, build_spec, count_parameters,
                                     count_test_parameters, load_checkpoint)
from cornernet_deploy.contract.arch import ARCHS, OFFICIAL_PARAM_COUNTS

torch.set_num_threads(2)

# Official figures (OFFICIAL_SPEC.md section 2): params used at test time (last stack only).
OFFICIAL_TEST_PARAMS = {"cornernet": 194_367_782, "cornernet-squeeze": 28_250_150,
                        "cornernet-saccade": 98_912_809}
OFFICIAL_HEADS = {  # (input, output map, attention map sizes)
    "cornernet": (511, 128, []),
    "cornernet-squeeze": (511, 64, []),
    "cornernet-saccade": (255, 64, [16, 32, 64]),
}


def meta_model(arch, **kw):
    with torch.device("meta"):
        return build_model(arch, **kw)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_parameter_counts_equal_official(arch, official_keys):
    model = meta_model(arch)
    assert count_parameters(model) == official_keys[arch]["param_count"] == OFFICIAL_PARAM_COUNTS[arch]
    assert count_test_parameters(model) == OFFICIAL_TEST_PARAMS[arch]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_state_dict_keys_and_shapes_equal_official(arch, official_keys):
    ours = {k: list(v.shape) for k, v in meta_model(arch).state_dict().items()}
    official = {k[len("module."):]: shape for k, shape, _ in official_keys[arch]["keys"]}
    assert ours == official


def random_official_state_dict(arch, official_keys, with_tracked=True, seed=0):
    """Deterministic random tensors under the official key names (with the `module.` prefix)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape, dtype in official_keys[arch]["keys"]:
        if name.endswith("num_batches_tracked"):
            if with_tracked:
                state[name] = torch.tensor(500000)
            continue
        t = torch.rand(shape, generator=g) if "running_var" in name else torch.randn(shape, generator=g)
        if len(shape) > 1:  # keep activations in a sane range through 100+ layers
            t = t / (t[0].numel() ** 0.5)
        state[name] = t + 0.5 if "running_var" in name else t
    return state


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(ARCHS))
def test_official_layout_loads_strictly_and_gives_official_head_shapes(arch, official_keys, tmp_path):
    state = random_official_state_dict(arch, official_keys, with_tracked=(arch != "cornernet"))
    path = tmp_path / "official.pkl"
    torch.save(state, path)
    model = build_model(arch).eval()
    load_checkpoint(model, path)
    # every tensor landed where its official name says
    ours = model.state_dict()
    for name, value in state.items():
        assert torch.equal(ours[name[len("module."):]], value), name
    size, out, atts = OFFICIAL_HEADS[arch]
    with torch.no_grad():
        heads = model(torch.randn(1, 3, size, size))
    assert heads["tl_heat"].shape == heads["br_heat"].shape == (1, 80, out, out)
    assert heads["tl_tag"].shape == heads["br_tag"].shape == (1, 1, out, out)
    assert heads["tl_off"].shape == heads["br_off"].shape == (1, 2, out, out)
    assert [heads[f"att{i}"].shape[-1] for i in range(len(atts))] == atts
    assert sorted(k for k in heads if k.startswith("att")) == [f"att{i}" for i in range(len(atts))]
    for i in range(len(atts)):  # official _test applies sigmoid to attention maps
        assert 0 <= heads[f"att{i}"].min() and heads[f"att{i}"].max() <= 1


@pytest.mark.parametrize("arch", list(ARCHS))
def test_heat_bias_initialised_to_minus_2_19(arch):
    model = build_model(arch, num_classes=3, width=0.125)
    for heads in (model.tl_heats, model.br_heats):
        for head in heads:
            assert torch.all(head[-1].bias == -2.19)
    if model.spec.attention:
        for stack in model.att_modules:
            for head in stack:
                assert torch.all(head[-1].bias == -2.19)


def test_train_mode_returns_every_stack_and_eval_mode_the_last():
    model = build_model("cornernet-saccade", num_classes=3, width=0.125)
    x = torch.randn(1, 3, 255, 255)
    model.train()
    per_stack = model(x)
    assert len(per_stack) == 3 and len(per_stack[0]["atts"]) == 3
    model.eval()
    with torch.no_grad():
        last = model(x)
        stack_outputs = model.train()(x)  # BN in train mode changes numbers; compare shapes only
    assert last["tl_heat"].shape == stack_outputs[-1]["tl_heat"].shape


def test_eval_output_is_the_last_stacks_heads():
    # With BN in eval mode, the last dict of the train-path equals the eval output.
    model = build_model("cornernet-squeeze", num_classes=2, width=0.125, stacks=2).eval()
    x = torch.randn(1, 3, 127, 127)
    with torch.no_grad():
        cnvs, _ = model.hg(x)
        expected = model._stack_heads(1, cnvs[1])
        first = model._stack_heads(0, cnvs[0])
        got = model(x)
    for k in expected:
        assert torch.equal(got[k], expected[k])
        assert not torch.equal(got[k], first[k])


def test_small_variants_come_from_the_same_code():
    spec = build_spec("cornernet", num_classes=5, width=0.25, levels=3, stacks=1)
    model = CornerNet(spec)
    assert spec.dims == (64, 64, 96, 96) and spec.stacks == 1 and spec.num_classes == 5
    assert spec.size_multiple == 4 * 8
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 3, 63, 95))
    assert out["tl_heat"].shape == (1, 5, 16, 24)


def test_input_size_rule():
    spec = ARCHS["cornernet-squeeze"]
    spec.check_input_size((511, 383))
    with pytest.raises(ValueError, match="k\\*128-1"):
        spec.check_input_size((512, 511))
    assert spec.output_size((511, 383)) == (64, 48)
