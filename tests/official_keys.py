"""The official GLIP state-dict layout, restated from the published key list (reference section 3.2).

Written independently of ``glip.checkpoints`` so that the key-map tests compare two separate
descriptions of the same checkpoint. Returns ``{official key (no "module."): shape}``.
"""

from __future__ import annotations

import torch


def official_state_shapes(
    embed: int,
    depths,
    heads,
    window: int,
    fpn: int,
    text_dim: int,
    text_layers: int,
    text_inter: int,
    vocab: int,
    num_blocks: int,
    early_fusion: bool,
    fusion_dim: int,
    cls_outputs: int = 80,
) -> dict[str, tuple[int, ...]]:
    s: dict[str, tuple[int, ...]] = {}
    b = "backbone.body."
    s[b + "patch_embed.proj.weight"] = (embed, 3, 4, 4)
    s[b + "patch_embed.proj.bias"] = (embed,)
    s[b + "patch_embed.norm.weight"] = (embed,)
    s[b + "patch_embed.norm.bias"] = (embed,)
    for st, (depth, nh) in enumerate(zip(depths, heads, strict=True)):
        c = embed * 2**st
        for blk in range(depth):
            p = f"{b}layers.{st}.blocks.{blk}."
            for n in ("norm1", "norm2"):
                s[p + n + ".weight"] = (c,)
                s[p + n + ".bias"] = (c,)
            s[p + "attn.qkv.weight"] = (3 * c, c)
            s[p + "attn.qkv.bias"] = (3 * c,)
            s[p + "attn.proj.weight"] = (c, c)
            s[p + "attn.proj.bias"] = (c,)
            s[p + "attn.relative_position_bias_table"] = ((2 * window - 1) ** 2, nh)
            s[p + "attn.relative_position_index"] = (window * window, window * window)
            s[p + "mlp.fc1.weight"] = (4 * c, c)
            s[p + "mlp.fc1.bias"] = (4 * c,)
            s[p + "mlp.fc2.weight"] = (c, 4 * c)
            s[p + "mlp.fc2.bias"] = (c,)
        if st < 3:
            s[f"{b}layers.{st}.downsample.norm.weight"] = (4 * c,)
            s[f"{b}layers.{st}.downsample.norm.bias"] = (4 * c,)
            s[f"{b}layers.{st}.downsample.reduction.weight"] = (2 * c, 4 * c)
    for i in (1, 2, 3):
        s[f"{b}norm{i}.weight"] = (embed * 2**i,)
        s[f"{b}norm{i}.bias"] = (embed * 2**i,)
    f = "backbone.fpn."
    for i, st in zip((2, 3, 4), (1, 2, 3), strict=True):
        s[f"{f}fpn_inner{i}.weight"] = (fpn, embed * 2**st, 1, 1)
        s[f"{f}fpn_inner{i}.bias"] = (fpn,)
        s[f"{f}fpn_layer{i}.weight"] = (fpn, fpn, 3, 3)
        s[f"{f}fpn_layer{i}.bias"] = (fpn,)
    for n in ("p6", "p7"):
        s[f"{f}top_blocks.{n}.weight"] = (fpn, fpn, 3, 3)
        s[f"{f}top_blocks.{n}.bias"] = (fpn,)
    t = "language_backbone.body.model."
    s[t + "embeddings.word_embeddings.weight"] = (vocab, text_dim)
    s[t + "embeddings.position_embeddings.weight"] = (512, text_dim)
    s[t + "embeddings.token_type_embeddings.weight"] = (2, text_dim)
    s[t + "embeddings.LayerNorm.weight"] = (text_dim,)
    s[t + "embeddings.LayerNorm.bias"] = (text_dim,)
    s[t + "embeddings.position_ids"] = (1, 512)
    for layer in range(text_layers):
        s.update(_bert_layer(f"{t}encoder.layer.{layer}.", text_dim, text_inter))
    h = "rpn.head."
    for i in range(num_blocks):
        if early_fusion:
            fb, tb, db = 3 * i, 3 * i + 1, 3 * i + 2
            a = f"{h}dyhead_tower.{fb}.b_attn."
            s[a + "gamma_v"] = (fpn,)
            s[a + "gamma_l"] = (text_dim,)
            for n, d in (("layer_norm_v", fpn), ("layer_norm_l", text_dim)):
                s[a + n + ".weight"] = (d,)
                s[a + n + ".bias"] = (d,)
            for n, (o, i_) in {
                "v_proj": (fusion_dim, fpn),
                "l_proj": (fusion_dim, text_dim),
                "values_v_proj": (fusion_dim, fpn),
                "values_l_proj": (fusion_dim, text_dim),
                "out_v_proj": (fpn, fusion_dim),
                "out_l_proj": (text_dim, fusion_dim),
            }.items():
                s[a + f"attn.{n}.weight"] = (o, i_)
                s[a + f"attn.{n}.bias"] = (o,)
            s.update(_bert_layer(f"{h}dyhead_tower.{tb}.", text_dim, text_inter))
        else:
            db = i
        d = f"{h}dyhead_tower.{db}."
        for k in range(3):
            s[d + f"DyConv.{k}.conv.weight"] = (fpn, fpn, 3, 3)
            s[d + f"DyConv.{k}.conv.bias"] = (fpn,)
            s[d + f"DyConv.{k}.bn.weight"] = (fpn,)
            s[d + f"DyConv.{k}.bn.bias"] = (fpn,)
        s[d + "AttnConv.1.weight"] = (1, fpn, 1, 1)
        s[d + "AttnConv.1.bias"] = (1,)
        s[d + "relu.fc.0.weight"] = (fpn // 4, fpn)
        s[d + "relu.fc.0.bias"] = (fpn // 4,)
        s[d + "relu.fc.2.weight"] = (4 * fpn, fpn // 4)
        s[d + "relu.fc.2.bias"] = (4 * fpn,)
        s[d + "offset.weight"] = (27, fpn, 3, 3)
        s[d + "offset.bias"] = (27,)
    s[h + "cls_logits.weight"] = (cls_outputs, fpn, 1, 1)
    s[h + "cls_logits.bias"] = (cls_outputs,)
    s[h + "bbox_pred.weight"] = (4, fpn, 1, 1)
    s[h + "bbox_pred.bias"] = (4,)
    s[h + "centerness.weight"] = (1, fpn, 1, 1)
    s[h + "centerness.bias"] = (1,)
    s[h + "dot_product_projection_text.weight"] = (fpn, text_dim)
    s[h + "dot_product_projection_text.bias"] = (fpn,)
    s[h + "log_scale"] = (1,)
    s[h + "bias_lang"] = (text_dim,)
    s[h + "bias0"] = (1,)
    for lvl in range(5):
        s[f"{h}scales.{lvl}.scale"] = (1,)
        s[f"rpn.anchor_generator.cell_anchors.{lvl}"] = (1, 4)
    return s


def _bert_layer(p: str, d: int, inter: int) -> dict[str, tuple[int, ...]]:
    s: dict[str, tuple[int, ...]] = {}
    for n in ("query", "key", "value"):
        s[f"{p}attention.self.{n}.weight"] = (d, d)
        s[f"{p}attention.self.{n}.bias"] = (d,)
    s[p + "attention.output.dense.weight"] = (d, d)
    s[p + "attention.output.dense.bias"] = (d,)
    s[p + "attention.output.LayerNorm.weight"] = (d,)
    s[p + "attention.output.LayerNorm.bias"] = (d,)
    s[p + "intermediate.dense.weight"] = (inter, d)
    s[p + "intermediate.dense.bias"] = (inter,)
    s[p + "output.dense.weight"] = (d, inter)
    s[p + "output.dense.bias"] = (d,)
    s[p + "output.LayerNorm.weight"] = (d,)
    s[p + "output.LayerNorm.bias"] = (d,)
    return s


def shapes_for_config(cfg) -> dict[str, tuple[int, ...]]:
    """Official layout with the sizes of a glip.config.GLIPConfig."""
    sw, t, tw = cfg.vision.swin, cfg.text, cfg.tower
    return official_state_shapes(
        sw.embed_dim,
        sw.depths,
        sw.num_heads,
        sw.window_size,
        cfg.vision.fpn_channels,
        t.hidden_size,
        t.num_hidden_layers,
        t.intermediate_size,
        t.vocab_size,
        tw.num_blocks,
        tw.early_fusion,
        tw.fusion_embed_dim,
    )


def write_official_checkpoint(cfg, path, with_extras=True):
    """An official-format file: unique constant per tensor so we can trace where each one lands."""
    shapes = shapes_for_config(cfg)
    model = {}
    for i, (k, shape) in enumerate(sorted(shapes.items())):
        if k.endswith("relative_position_index"):
            w = cfg.vision.swin.window_size
            model["module." + k] = torch.randint(0, (2 * w - 1) ** 2, shape)
        else:
            model["module." + k] = torch.full(shape, float(i))
    blob = {"model": model}
    if with_extras:
        blob.update(
            {
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
                "scheduler": {"last_epoch": 3},
                "iteration": 1000,
                "model_ema": {k: v.clone() for k, v in list(model.items())[:3]},
            }
        )
    torch.save(blob, path)
    return model
