"""`imgcls VERB --help` for every verb, as a real process: exit 0, no traceback, the verb's own options listed."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields

import pytest
import yaml

from imgcls.cli import VERBS
from imgcls.cli.help import CONF
from imgcls.config import TRAIN_GROUPS, ServeConfig


def run_help(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imgcls", *args], capture_output=True, text=True, timeout=120)


def own_keys(verb: str) -> list[str]:
    """The keys a verb's config sets itself (its schema's fields too, for serve)."""
    cfg = yaml.safe_load((CONF / f"{verb.replace('-', '_')}.yaml").read_text())
    keys = [k for k in cfg if k != "defaults"]
    return keys + [f.name for f in fields(ServeConfig)] if verb == "serve" else keys


@pytest.mark.parametrize("verb", list(VERBS))
def test_every_verb_has_its_own_help(verb):
    p = run_help(verb, "--help")
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "Traceback" not in out, out
    assert out.startswith(f"imgcls {verb}: {VERBS[verb][1]}")
    for key in own_keys(verb):
        assert f"  {key}=" in p.stdout, (verb, key)
    defaults = yaml.safe_load((CONF / f"{verb.replace('-', '_')}.yaml").read_text())["defaults"]
    if "train" in defaults:  # lr-find and sanity take train's groups
        for group in TRAIN_GROUPS:
            assert f"\n  {group}=" in p.stdout, (verb, group)


def test_ablate_help_lists_the_shipped_ablations_and_runs_without_one_give_a_clear_error():
    p = run_help("ablate", "--help")
    shipped = sorted(f.stem for f in (CONF / "ablation").glob("*.yaml"))
    assert len(shipped) >= 3
    line = next(x for x in p.stdout.splitlines() if x.startswith("  ablation="))
    assert all(name in line for name in shipped), line
    p = run_help("ablate")  # no ablation= at all: one line naming the choices, no traceback
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "missing ablation=NAME" in p.stderr and all(name in p.stderr for name in shipped)


def test_train_help_shows_the_composed_values_and_their_meanings():
    p = run_help("train", "experiment=cifar10_fast", "-h")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert any(x.strip().startswith("trainer.batch_size=2000 ") for x in lines)  # the recipe's value, not the default
    epochs = next(x for x in lines if x.strip().startswith("trainer.epochs="))
    assert "passes over the training set" in epochs  # the comment of TrainerConfig.epochs
    assert any(x.strip().startswith("aug.crop_scale=[0.35,1.0]") for x in lines)  # lists as typed on a command line
    p = run_help("train", "data=nonexistent", "--help")  # a bad override: said, then the defaults' help
    assert p.returncode == 0 and "does not compose" in p.stderr and "Traceback" not in p.stderr
    assert "  data=cifar10 " in p.stdout
