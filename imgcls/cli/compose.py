"""Hydra composition, in the CLI layer: the packaged `conf/` plus overrides -> plain dicts of option groups.

`compose_train(overrides)` is the public way for scripts (benchmarks, the ablation runner through the
CLI) to get what `imgcls train OVERRIDES` would train with, without Hydra outside this layer.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from omegaconf import OmegaConf

from imgcls.config import GROUP_SCHEMAS as SCHEMAS
from imgcls.config import TRAIN_GROUPS, ServeConfig
from imgcls.errors import ImgclsError

# The model group's configs, one per registered model, as `model_nodes()` makes them from the builders.
# Read from this file so that `imgcls VERB --help` does not import torch and every model family; a test
# checks it against the registry (regenerate: python -m imgcls.cli.compose).
MODEL_NODES = Path(__file__).resolve().parent.parent / "conf" / "models.json"
SKIPPED_ARGS = ("num_classes", "in_chans", "img_size", "arch", "download")  # set by imgcls, not by the user


def model_nodes() -> dict[str, dict]:
    """One config per registered model, made from its builder's keyword defaults (imports every family)."""
    from imgcls.models import list_models
    from imgcls.models.hub import ADAPTERS
    from imgcls.models.registry import model_builder

    nodes = {}
    for name in list_models(task=None):
        params = inspect.signature(model_builder(name)).parameters
        # pretrained: a weights file to start from (true: the library's, for timm/torchvision); freeze: backbone
        node = {"name": name, "pretrained": None, "freeze": None}
        if name in ADAPTERS:  # model=timm model.name=resnet18: `name` is the library's model name
            node = {"adapter": name, "name": params["arch"].default, "pretrained": None, "freeze": None}
        for p in params.values():
            if p.name not in SKIPPED_ARGS and p.default is not inspect.Parameter.empty:
                node[p.name] = list(p.default) if isinstance(p.default, tuple) else p.default
        nodes[name] = node
    return nodes


def register_configs() -> None:
    """Schemas of the option groups, and the model group (from MODEL_NODES, else from the registry)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for group, schema in SCHEMAS.items():
        cs.store(group=group, name="_schema", node=schema)
    cs.store(name="_serve_schema", node=ServeConfig)
    nodes = json.loads(MODEL_NODES.read_text()) if MODEL_NODES.is_file() else model_nodes()
    for name, node in nodes.items():
        cs.store(group="model", name=name, node=node)
    # model=auto: chosen for the data when the run starts (imgcls.setup.choose_model)
    cs.store(group="model", name="auto", node={"name": "auto", "pretrained": None, "freeze": None})


def compose_train(overrides: list[str]) -> dict:
    """The option groups `imgcls train OVERRIDES` would train with (Hydra's compose API), as plain dicts."""
    return compose_many([overrides])[0]


def compose_many(override_lists: list[list[str]], *, errors: list | None = None) -> list[dict | None]:
    """`compose_train` for several override lists under one Hydra initialization.

    With `errors` (a list), a list that does not compose gives None and its ImgclsError is appended
    there (in order) instead of raised.
    """
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register_configs()
    GlobalHydra.instance().clear()
    out: list[dict | None] = []
    try:
        with initialize_config_module(config_module="imgcls.conf", version_base="1.3"):
            for overrides in override_lists:
                try:
                    cfg = compose(config_name="train", overrides=list(overrides))
                except (HydraException, OmegaConfBaseException) as e:
                    err = ImgclsError(str(e).splitlines()[0])
                    if errors is None:
                        raise err from None
                    errors.append(err)
                    out.append(None)
                    continue
                out.append({k: OmegaConf.to_container(cfg[k], resolve=True) if cfg.get(k) is not None else None
                            for k in TRAIN_GROUPS})
    finally:
        GlobalHydra.instance().clear()
    return out


if __name__ == "__main__":  # rewrite MODEL_NODES after adding or changing a model builder
    MODEL_NODES.write_text(json.dumps(model_nodes(), indent=1) + "\n")
    print(f"wrote {MODEL_NODES}")
