"""How a dataset's categories become the prompt: names, overrides and caption prompts.

By default the prompt is the category names in id order, cleaned as the official code does
(``"traffic_light"`` → ``"traffic light"``). ODinW-style overrides replace names
(``DATASETS.OVERRIDE_CATEGORY``) or give each class a prefix/suffix around its name
(``DATASETS.CAPTION_PROMPT``; the class's span covers the name only). Overrides are read from a
YAML file mapping dataset names to entries::

    bccd:
      categories: {RBC: red blood cell, WBC: white blood cell, Platelets: platelets}
    pothole:
      caption_prompt:                     # one entry per category, in id order
        - {prefix: "there are some ", name: holes, suffix: " on the road"}
    raccoon:
      template: "a photo of a {}"         # prefix/suffix for every class
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glip.errors import ConfigError
from glip.validation import Fields, closest, join_path, read_yaml

if TYPE_CHECKING:
    from glip.predictor import GLIPPredictor
    from glip.text import Prompt

OVERRIDE_KEYS = ("categories", "caption_prompt", "template")


@dataclass(frozen=True)
class DatasetPrompt:
    """The names and optional caption-prompt entries for one dataset's categories (id order)."""

    names: tuple[str, ...]
    caption_prompts: tuple[dict[str, str], ...] | None = None

    def describe(self) -> str:
        """The prompt's entities as text, for reports."""
        if self.caption_prompts is None:
            return ". ".join(self.names)
        return ". ".join(f"{c.get('prefix', '')}[{c['name']}]{c.get('suffix', '')}" for c in self.caption_prompts)


def dataset_prompt(
    category_names: Sequence[str], override: Mapping[str, Any] | None = None, template: str | None = None
) -> DatasetPrompt:
    """Apply an override entry and/or a ``"... {} ..."`` template to a dataset's category names.

    Raises:
        ConfigError: for unknown override keys, values of the wrong kind, names that are not
            categories of the dataset, a caption prompt of the wrong length, or a template without ``{}``.
    """
    names = list(category_names)
    fields = Fields("prompt override", ConfigError)
    override = check_override(override or {}, fields, "")
    renames = override.get("categories") or {}
    missing = [k for k in renames if k not in names]
    if missing:
        raise ConfigError(f"prompt override renames {missing}, which are not categories of the dataset ({names[:10]})")
    names = [renames.get(n, n) for n in names]
    if template is not None and "template" not in override:
        _template(template, fields, "template")
    template = override.get("template", template)
    entries = override.get("caption_prompt")
    if entries is not None:
        if len(entries) != len(names):
            raise ConfigError(f"caption_prompt has {len(entries)} entries for {len(names)} categories")
        return DatasetPrompt(tuple(names), tuple(entries))
    if template is not None:
        prefix, suffix = template.split("{}")
        return DatasetPrompt(tuple(names), tuple({"prefix": prefix, "name": n, "suffix": suffix} for n in names))
    return DatasetPrompt(tuple(names))


def prompt_chunks(predictor: GLIPPredictor, prompt: DatasetPrompt, label_ids: Sequence[int]) -> list[Prompt]:
    """The prompts that cover a dataset's classes: chunks of at most the model's query length.

    Plain names and templated / caption-prompt classes are chunked alike
    (:func:`glip.text.chunking.chunk_vocabulary`), so ``"a photo of a {}"`` on 1,203 names works; a
    prompt that fits is the one prompt the official evaluation builds.

    Raises:
        PromptError: a class name empty once cleaned, or one class alone longer than the query length.
    """
    if prompt.caption_prompts is None:
        return predictor.prompts_for(classes=list(prompt.names), label_ids=label_ids)
    from glip.text.chunking import chunk_vocabulary

    return chunk_vocabulary(
        predictor.processor.tokenizer, list(prompt.names), max_len=predictor.processor.max_query_len,
        max_classes_per_chunk=predictor.max_classes_per_chunk, label_ids=label_ids,
        caption_prompts=list(prompt.caption_prompts),
    )  # fmt: skip


def check_override(entry: Any, fields: Fields, where: str) -> dict[str, Any]:
    """One dataset's override entry, checked, with its names and prompt parts as strings.

    Raises:
        ConfigError: naming the field, e.g. ``bccd.categories.RBC: expected a name, got [1, 2]``.
    """
    entry = fields.mapping(entry, where or "override")
    for key in entry:
        if key not in OVERRIDE_KEYS:
            fields.fail(join_path(where, str(key)), f"unknown key{closest(key, OVERRIDE_KEYS)}; use {OVERRIDE_KEYS}")
    out: dict[str, Any] = {}
    if entry.get("categories") is not None:
        renames = fields.mapping(entry["categories"], join_path(where, "categories"))
        out["categories"] = {
            str(k): _text(v, fields, join_path(join_path(where, "categories"), str(k))) for k, v in renames.items()
        }
    if entry.get("caption_prompt") is not None:
        at = join_path(where, "caption_prompt")
        items = []
        for i, item in enumerate(fields.array(entry["caption_prompt"], at)):
            item = fields.mapping(item, f"{at}[{i}]")
            unknown = [k for k in item if k not in ("prefix", "name", "suffix")]
            if unknown:
                fields.fail(f"{at}[{i}].{unknown[0]}", "unknown key: use prefix, name, suffix")
            if "name" not in item:
                fields.fail(f"{at}[{i}].name", "missing: each caption_prompt entry needs the class name")
            items.append({k: _text(v, fields, f"{at}[{i}].{k}", blank=k != "name") for k, v in item.items()})
        out["caption_prompt"] = items
    if entry.get("template") is not None:
        out["template"] = _template(entry["template"], fields, join_path(where, "template"))
    return out


def _text(value: Any, fields: Fields, where: str, blank: bool = False) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # YAML reads `1: 2` as numbers
    return fields.string(value, where, blank=blank)


def _template(value: Any, fields: Fields, where: str) -> str:
    template = fields.string(value, where)
    if template.count("{}") != 1:
        fields.fail(where, f"prompt template {template!r} must contain exactly one '{{}}' for the class name")
    return template


def load_prompt_overrides(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a YAML file of per-dataset prompt overrides (see the module docstring).

    Raises:
        ConfigError: if the file is missing, unreadable, not YAML, or not a mapping of dataset
            names to valid override entries (the message names the bad field).
    """
    data = read_yaml(path, "prompt override file", ConfigError, mapping=True)
    fields = Fields(path, ConfigError)
    return {str(name): check_override(entry, fields, str(name)) for name, entry in data.items()}
