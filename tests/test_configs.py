"""Every packaged config composes, and every group option instantiates into what the library takes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import imgcls.cli as cli
from imgcls.config import AugConfig, DataConfig, OptimConfig, SchedConfig, TrainerConfig, coerce, model_config
from imgcls.models import create_model, list_models
from imgcls.setup import SMALL_IMAGE_MODEL
from imgcls.training.optim import build_optimizer, lr_factor

CONF = Path(cli.__file__).parent.parent / "conf"
cli._register_configs()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_train(*overrides: str):
    with initialize_config_module("imgcls.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides))


def plain(cfg, key):
    return OmegaConf.to_container(cfg[key], resolve=True)


GROUP_CASES = [(g, o) for g in ("data", "optim", "sched", "aug", "loss", "trainer", "experiment") for o in options(g)]


@pytest.mark.parametrize("group, option", GROUP_CASES)
def test_group_option_composes_and_instantiates(group, option):
    cfg = compose_train(f"{group}={option}", "data.root=/some/dir")
    data = coerce(DataConfig, plain(cfg, "data"), "data")
    assert data.root == "/some/dir"
    optim, sched = coerce(OptimConfig, plain(cfg, "optim"), "optim"), coerce(SchedConfig, plain(cfg, "sched"), "sched")
    coerce(AugConfig, plain(cfg, "aug"), "aug")
    coerce(TrainerConfig, plain(cfg, "trainer"), "trainer")
    m = model_config(plain(cfg, "model"))
    name = SMALL_IMAGE_MODEL if m.name == "auto" else m.name  # auto: what it picks for 32x32 images
    args = {"img_size": 32} if name == "mlp" else {}
    net = create_model(name, num_classes=10, in_chans=3, **m.args, **args)
    build_optimizer(net, optim)
    assert 0 <= lr_factor(0.5, sched) <= 1
    if group in ("data", "optim", "sched"):
        assert cfg[group].name == option  # the file selected is the one composed


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_has_a_config(name):
    cfg = compose_train(f"model={name}")
    m = model_config(plain(cfg, "model"))
    assert m.name == name
    args = {"img_size": 28} if name == "mlp" else {}
    out = create_model(name, num_classes=3, in_chans=1, **m.args, **args)(torch.zeros(2, 1, 28, 28))
    assert out.shape == (2, 3)


def test_experiment_overrides_groups():
    cfg = compose_train("experiment=mnist_mlp")
    assert cfg.data.name == "mnist" and cfg.model.name == "mlp" and cfg.aug.flip is False
    assert cfg.trainer.epochs == 1


def test_evaluate_and_predict_configs_compose():
    with initialize_config_module("imgcls.conf", version_base="1.3"):
        ev = compose("evaluate", overrides=["ckpt=x.safetensors", "data=mnist"])
        pr = compose("predict", overrides=["ckpt=x.safetensors", "source=img"])
    assert ev.ckpt == "x.safetensors" and ev.data.name == "mnist" and ev.split == "test"
    assert pr.source == "img" and pr.top_k == 5


def test_library_models_are_chosen_by_their_own_name():
    cfg = compose_train("model=timm", "model.name=resnet10t", "model.pretrained=w.pth", "model.freeze=backbone")
    m = model_config(plain(cfg, "model"))
    assert (m.name, m.args["arch"], m.pretrained, m.freeze) == ("timm", "resnet10t", "w.pth", "backbone")
    m = model_config(plain(compose_train("model=torchvision"), "model"))
    assert (m.name, m.args, m.pretrained) == ("torchvision", {"arch": "mobilenet_v3_small"}, None)


def test_transfer_options_compose():
    cfg = compose_train("loss=balanced", "data.sampler=balanced", "trainer.freeze_epochs=1", "optim.lr_mult=10")
    assert plain(cfg, "loss") == {"class_weights": "balanced"} and cfg.data.sampler == "balanced"
    assert cfg.trainer.freeze_epochs == 1 and cfg.optim.lr_mult == 10


@pytest.mark.parametrize("verb, key", [("lr_find", "start_lr"), ("sanity", "max_steps")])
def test_study_verbs_compose_trains_configuration(verb, key):
    with initialize_config_module("imgcls.conf", version_base="1.3"):
        cfg = compose(verb, overrides=["experiment=mnist_cnn"])
    assert key in cfg and cfg.data.name == "mnist" and cfg.model.name == "fastnet" and cfg.optim.name == "muon"


@pytest.mark.parametrize("verb, overrides, key", [
    ("explain", ["ckpt=m.safetensors", "source=img"], "methods"), ("embed", ["ckpt=m.safetensors", "data=mnist"], "limit"),
    ("search", ["ckpt=m.safetensors", "index=d", "query=q.png"], "k"), ("visualize", ["ckpt=m.safetensors"], "steps")])
def test_understanding_verbs_compose(verb, overrides, key):
    with initialize_config_module("imgcls.conf", version_base="1.3"):
        cfg = compose(verb, overrides=overrides)
    assert key in cfg and not OmegaConf.missing_keys(cfg)
    if verb == "embed":
        assert cfg.data.name == "mnist"


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "ablation").glob("*.yaml")))
def test_shipped_ablation_files_are_valid(name):
    """Every variant of every shipped study composes and builds its model: a study never fails at its 30th run."""
    from imgcls.ablation.run import check_variants

    with initialize_config_module("imgcls.conf", version_base="1.3"):
        cfg = compose("ablate", overrides=[f"ablation={name}"])
    from imgcls.ablation import spec_from_dict

    spec = spec_from_dict(OmegaConf.to_container(cfg.ablation))
    assert spec.name == name and len(spec.variants) > 1 and spec.variants[0].name == "base"
    check_variants(spec, compose=cli.compose_many)


def test_ablate_and_report_configs_compose():
    with initialize_config_module("imgcls.conf", version_base="1.3"):
        cfg = compose("report", overrides=["study=x"])
    assert cfg.name == "report" and cfg.notes is None
    with initialize_config_module("imgcls.conf", version_base="1.3"):
        cfg = compose("ablate", overrides=["ablation=cifar10", "max_runs=2"])
    assert cfg.max_runs == 2 and cfg.ablation.budget.epochs == 3 and cfg.out is None


def test_long_study_reruns_the_short_studys_variants():
    from imgcls.ablation import spec_from_dict

    with initialize_config_module("imgcls.conf", version_base="1.3"):
        short, long = (spec_from_dict(OmegaConf.to_container(compose("ablate", overrides=[f"ablation={n}"]).ablation))
                       for n in ("cifar10", "cifar10_long"))
    assert long.epochs > short.epochs and long.base == short.base and long.seeds == short.seeds
    # exactly the selected variants and the base, in the short study's order
    assert [v.name for v in long.variants] == [v.name for v in short.variants if v.name in {"base", *long.select}]
    assert len(long.variants) == len(set(long.select)) + 1 < len(short.variants)
    assert "ten epochs" in long.factors["schedule"] and long.factors["backbone"] == short.factors["backbone"]
    for v in long.variants:  # same overrides as in the short study, so the two rankings compare
        assert v.overrides == short.variant(v.name).overrides


def test_cached_model_configs_match_the_registry():
    """conf/models.json (read by the CLI so that --help imports no torch) is what the builders say today."""
    import json

    from imgcls.cli.compose import MODEL_NODES, model_nodes

    assert json.loads(MODEL_NODES.read_text()) == json.loads(json.dumps(model_nodes())), \
        "conf/models.json is stale: run `python -m imgcls.cli.compose` after changing a model builder"
