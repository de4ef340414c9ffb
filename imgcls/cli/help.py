"""`imgcls VERB --help`: the verb's purpose, its own options with defaults and meanings, and its option groups.

Made from what defines them, so it cannot drift: the verb's config in `conf/` (its header comment and
each key's comment), the composed configuration (the defaults this command line would run with, so
`imgcls train experiment=cifar10_fast --help` shows that recipe's values), Hydra's list of each
group's options, and the comments of the schema dataclasses in `imgcls/config.py`.
"""

from __future__ import annotations

import ast
import io
import json
import re
import textwrap
import tokenize
from functools import cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

CONF = Path(__file__).resolve().parent.parent / "conf"
HIDDEN_GROUPS = ("hydra", "_")  # Hydra's own groups and the schema/base entries of the defaults lists


@cache
def field_comments() -> dict[str, dict[str, str]]:
    """{dataclass name: {field: comment}} of imgcls/config.py: the field's line comment, else the comment lines above it."""
    import imgcls.config as config

    source = Path(config.__file__).read_text(encoding="utf-8")
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    out: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = {}
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                line = item.lineno
                text = comments.get(line) if "#" in lines[line - 1] else None
                if text is None:  # the comment block right above the field
                    above, k = [], line - 1
                    while k in comments and lines[k - 1].strip().startswith("#"):
                        above.insert(0, comments[k])
                        k -= 1
                    text = " ".join(above)
                fields[item.target.id] = text or ""
        out[node.name] = fields
    return out


def yaml_comments(path: Path) -> tuple[list[str], dict[str, str]]:
    """A verb config's header comment lines, and {top-level key: its line comment, else the comment lines above it}."""
    header, keys, above, in_header = [], {}, [], True
    for line in path.read_text(encoding="utf-8").splitlines():
        in_header = in_header and line.startswith("#")
        if in_header:
            header.append(line.lstrip("#").strip())
        elif line.startswith("#"):
            above.append(line.lstrip("#").strip())
        else:
            m = re.match(r"^([A-Za-z_]\w*):([^#]*)(?:#\s*(.*))?$", line)
            if m:
                keys[m.group(1)] = m.group(3) or " ".join(above)
            above = []
    return header, keys


def _value(node: DictConfig, key: str) -> str:
    """A key's value as written (interpolations unresolved: `${oc.env:IMGCLS_API_KEY,null}`)."""
    raw = OmegaConf.to_container(node, resolve=False)[key]
    if isinstance(raw, (list, dict)):
        return json.dumps(raw, separators=(",", ":"))  # as typed on a command line: [0.35,1.0]
    return "???" if raw == "???" else OmegaConf.to_yaml({key: raw}).strip().split(": ", 1)[-1].replace("\n", " ")


def _option_line(key: str, value: str, meaning: str, indent: int = 2, width: int = 120) -> str:
    head = f"{' ' * indent}{key}={value}"
    if not meaning:
        return head
    lines = textwrap.wrap(meaning, width - 45) or [""]
    if len(head) > 43:  # a long key=value gets the meaning on the lines below
        return "\n".join([head, *[" " * 45 + x for x in lines]])
    return "\n".join([f"{head:<44} {lines[0]}", *[" " * 45 + x for x in lines[1:]]])


def compose_verb(config_name: str, overrides: list[str]) -> tuple[DictConfig, dict[str, str], dict[str, list[str]]]:
    """The verb's composed config (unresolved), the group choices it made, and every option of those groups."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from imgcls.cli.compose import register_configs
    from imgcls.config import TRAIN_GROUPS

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="imgcls.conf", version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
            chosen = {g: str(c) for g, c in cfg.hydra.runtime.choices.items() if not g.startswith(HIDDEN_GROUPS)}
            order = [*TRAIN_GROUPS, "experiment", "hparams_search"]  # a run's groups, then those that override them
            choices = dict(sorted(chosen.items(), key=lambda gc: (order.index(gc[0]) if gc[0] in order else -1, gc[0])))
            loader = GlobalHydra.instance().config_loader()
            options = {g: [o for o in loader.get_group_options(g) if not o.startswith("_")] for g in choices}
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices, options


def verb_help(verb: str, summary: str, overrides: list[str] | None = None) -> str:
    """The text of `imgcls VERB [overrides] --help`."""
    from imgcls.config import GROUP_SCHEMAS

    name = verb.replace("-", "_")
    header, own = yaml_comments(CONF / f"{name}.yaml")
    cfg, choices, options = compose_verb(name, list(overrides or []))
    schemas = field_comments()
    out = [f"imgcls {verb}: {summary}", ""]
    out += [f"  {h}" if h else "" for h in header]
    if header:
        out.append("")
    own_keys = [k for k in cfg if k not in choices]
    schema_docs = schemas.get(f"{name.title().replace('_', '')}Config", {})  # ServeConfig for serve
    if own_keys:
        out.append(f"options of {verb} (key=value; shown with this command line's values):")
        out += [_option_line(k, _value(cfg, k), own.get(k) or schema_docs.get(k, "")) for k in own_keys]
        out.append("")
    if choices:
        out.append("option groups (group=option; then group.key=value for the chosen option's keys):")
        for group, chosen in choices.items():
            listed = ", ".join(options[group]) or "-"
            out += textwrap.wrap(f"{group}={chosen if chosen != 'None' else 'null'}    options: {listed}", 118,
                                 initial_indent="  ", subsequent_indent="      ")
            node = cfg.get(group)
            if isinstance(node, DictConfig):
                docs = schemas.get(GROUP_SCHEMAS[group].__name__, {}) if group in GROUP_SCHEMAS else \
                    schemas.get("ModelConfig", {}) if group == "model" else {}
                out += [_option_line(f"{group}.{k}", _value(node, k), docs.get(k, ""), indent=6) for k in node]
        out.append("")
    out += [f"Hydra: imgcls {verb} -m key=a,b (a sweep) | --cfg job (the composed configuration) | --hydra-help",
            "Every verb: imgcls --help"]
    return "\n".join(out)
