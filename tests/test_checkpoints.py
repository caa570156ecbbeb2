"""Official checkpoint key map, converter round trip, and our model folders."""

import json

import pytest
import torch

from glip.checkpoints import (
    infer_config,
    load_official,
    official_key_to_ours,
    read_official_checkpoint,
    save_model,
)
from glip.config import GLIPConfig
from glip.errors import CheckpointError
from glip.modeling.glip import GLIPModel
from official_keys import shapes_for_config, write_official_checkpoint

IGNORED = ("cls_logits", "cell_anchors", "position_ids")


@pytest.mark.parametrize("preset", ["tiny", "tiny_a"])
def test_official_checkpoint_loads_with_nothing_missing_or_unexpected(tmp_path, preset):
    cfg = GLIPConfig.from_preset(preset)
    official = write_official_checkpoint(cfg, tmp_path / "ckpt.pth")
    model, report = load_official(tmp_path / "ckpt.pth", GLIPModel, cfg)
    assert report.missing == []
    assert report.unexpected == []
    assert sorted(report.ignored) == sorted(k.removeprefix("module.") for k in official if any(s in k for s in IGNORED))
    state = model.state_dict()
    for key, value in official.items():
        key = key.removeprefix("module.")
        ours = official_key_to_ours(key, cfg.tower.early_fusion)
        if any(s in key for s in IGNORED):
            continue
        assert torch.equal(state[ours], value), key


def test_hand_listed_key_pairs():
    f = official_key_to_ours
    assert f("rpn.head.dyhead_tower.3.b_attn.attn.v_proj.weight", True) == "tower.blocks.1.fusion.attn.v_proj.weight"
    assert f("rpn.head.dyhead_tower.4.attention.self.query.bias", True) == "tower.blocks.1.text_layer.query.bias"
    assert f("rpn.head.dyhead_tower.4.output.LayerNorm.weight", True) == "tower.blocks.1.text_layer.ffn_norm.weight"
    assert f("rpn.head.dyhead_tower.5.DyConv.0.bn.bias", True) == "tower.blocks.1.dyconv.convs.0.norm.bias"
    assert f("rpn.head.dyhead_tower.5.relu.fc.2.weight", True) == "tower.blocks.1.dyconv.act.fc2.weight"
    assert f("rpn.head.dyhead_tower.5.AttnConv.1.weight", False) == "tower.blocks.5.dyconv.scale_attn.weight"
    assert f("backbone.fpn.fpn_inner2.weight", True) == "backbone.fpn.inner_blocks.0.weight"
    assert f("backbone.fpn.top_blocks.p7.bias", True) == "backbone.fpn.p7.bias"
    assert f("language_backbone.body.model.encoder.layer.3.output.dense.weight", True) == (
        "text_encoder.bert.encoder.layer.3.output.dense.weight"
    )
    assert f("rpn.head.dot_product_projection_text.weight", True) == "head.text_proj.weight"
    assert f("rpn.head.cls_logits.weight", True) is None


@pytest.mark.parametrize("preset", ["glip_t", "glip_t_a", "glip_l"])
def test_full_size_official_layout_matches_our_shapes(preset):
    cfg = GLIPConfig.from_preset(preset)
    with torch.device("meta"):
        model = GLIPModel(cfg, load_pretrained_parts=False)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mapped = {}
    for key, shape in shapes_for_config(cfg).items():
        target = official_key_to_ours(key, cfg.tower.early_fusion)
        if target is None:
            assert any(s in key for s in IGNORED), key
            continue
        assert target in ours, f"{key} -> {target} is not a model key"
        assert ours[target] == shape, (key, shape, ours[target])
        mapped[target] = key
    assert sorted(set(ours) - set(mapped)) == []


def test_infer_config_recognises_presets(tmp_path):
    for preset in ("tiny", "tiny_a"):
        cfg = GLIPConfig.from_preset(preset)
        write_official_checkpoint(cfg, tmp_path / "c.pth", with_extras=False)
        got = infer_config(read_official_checkpoint(tmp_path / "c.pth"))
        assert got.vision.swin == cfg.vision.swin.__class__(**{**cfg.vision.swin.__dict__, "drop_path_rate": 0.2})
        assert got.tower.num_blocks == cfg.tower.num_blocks
        assert got.tower.early_fusion == cfg.tower.early_fusion
        assert got.text.hidden_size == cfg.text.hidden_size


def test_shape_mismatch_is_a_clear_error(tmp_path):
    write_official_checkpoint(GLIPConfig.tiny(), tmp_path / "c.pth")
    wrong = GLIPConfig.tiny().replace(**{"tower.fusion_embed_dim": 32})
    with pytest.raises(CheckpointError, match="do not fit the model"):
        load_official(tmp_path / "c.pth", GLIPModel, wrong)


def test_unsafe_or_missing_checkpoints_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_official_checkpoint(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="weights-only"):
        read_official_checkpoint(bad)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = GLIPModel(GLIPConfig.tiny()).eval()
    save_model(model, tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    loaded = GLIPModel.from_pretrained(tmp_path / "m").eval()
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    assert not list((tmp_path / "m").glob("*.tmp"))
    # a folder whose weights do not fit its config is refused with a clear message
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["tower"]["num_blocks"] = 3
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not match its config"):
        GLIPModel.from_pretrained(tmp_path / "m")


def test_official_pth_loads_through_from_pretrained(tmp_path):
    cfg = GLIPConfig.tiny()
    write_official_checkpoint(cfg, tmp_path / "c.pth")
    model = GLIPModel.from_pretrained(tmp_path / "c.pth")
    assert model.config.tower.num_blocks == cfg.tower.num_blocks


def test_folder_without_package_provided_parts_in_half_precision(tmp_path):
    torch.manual_seed(0)
    model = GLIPModel(GLIPConfig.from_preset("effnet_minilm")).eval()
    model.save_pretrained(tmp_path / "m", exclude=("text", "body"), dtype=torch.float16)
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert not any(k.startswith(("text_encoder.", "backbone.body.")) for k in stored)
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    loaded = GLIPModel.from_pretrained(tmp_path / "m").eval()
    ref, got = model.state_dict(), loaded.state_dict()
    for k in ref:
        if k.startswith(("text_encoder.", "backbone.body.")):
            assert torch.equal(ref[k], got[k]), k  # rebuilt from the installed packages
        elif ref[k].is_floating_point():
            assert torch.allclose(ref[k], got[k], atol=1e-3, rtol=1e-3), k
    with pytest.raises(CheckpointError, match="no installed weights"):
        GLIPModel(GLIPConfig.tiny()).save_pretrained(tmp_path / "x", exclude=("text",))
