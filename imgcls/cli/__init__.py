"""Command line: `imgcls VERB key=value ...`. The only module that imports Hydra.

Hydra composes each verb's configuration from the packaged `conf/` (groups data, model, optim,
sched, aug, trainer, experiment) and command-line overrides, with `-m` for sweeps; the verbs then
call the plain-Python API with dicts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from imgcls.cli.compose import SCHEMAS, TRAIN_GROUPS, compose_many, compose_train, register_configs  # noqa: F401
from imgcls.errors import ImgclsError

_register_configs = register_configs  # the old private name, still used by scripts


def _plain(cfg: DictConfig, key: str):
    node = cfg.get(key)
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def cmd_train(cfg: DictConfig) -> float:
    """Train; returns the monitored validation number of the best epoch (trainer.monitor): a sweeper's objective."""
    import time

    from imgcls.cli.sweep import multirun_job, trial_record, write_trial
    from imgcls.training.run import train

    t0 = time.perf_counter()
    job = multirun_job()
    # In a multirun several jobs share a process (or a launcher's worker): each budget counts from its job's start.
    r = train(**{k: _plain(cfg, k) for k in TRAIN_GROUPS}, budget_from=t0 if job else None)
    print(f"model file: {r.best}")
    print(f"run folder: {r.run_dir}")
    monitor = cfg.trainer.monitor
    if r.history and monitor not in r.history[0]:  # a task without val_acc (detection) monitors its own first number
        from imgcls.tasks import effective_monitor, get_task

        monitor = effective_monitor(monitor, get_task(r.metrics.get("task", "classify")))
    record = trial_record(r.history, monitor, r.metrics, r.run_dir, time.perf_counter() - t0)
    if job and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone has the test numbers
        write_trial(job, record)
    return record["value"]


def cmd_evaluate(cfg: DictConfig) -> None:
    from imgcls.evaluation import evaluate

    m = evaluate(cfg.ckpt, model=_plain(cfg, "model"), data=_plain(cfg, "data"), split=cfg.split, out_dir=cfg.out, project=cfg.project,
                 batch_size=cfg.batch_size, device=cfg.device, threads=cfg.threads, tta=cfg.tta,
                 calibrate=cfg.calibrate)
    if "pretrained" in m:
        print(m["pretrained"])
    if m.get("task") == "detect":
        per = [r for r in m["per_class"] if r.get("ap") is not None]
        worst = sorted(per, key=lambda r: r["ap"])[:5]

        def f(v):  # COCO's undefined (no true box): None
            return "n/a" if v is None else f"{v:.3f}"

        print(f"{m['split']}: mAP@[.5:.95] {f(m['map'])}  mAP50 {f(m['map_50'])}  recall (100 per image) "
              f"{f(m['mar_100'])}  ({m['num_samples']} images, {m['num_boxes']} boxes, {len(per)} classes present)")
        if worst:
            print("lowest AP: " + ", ".join(f"{r['class']} {r['ap']:.3f}" for r in worst))
        print(f"metrics: {Path(m['out_dir']) / 'metrics.json'} (per class: per_class.csv; pr_curves.png; the worst images "
              f"drawn in worst/)")
        return
    if m.get("task") == "segment":
        worst = sorted(((v["iou"], c) for c, v in m["per_class"].items() if v["iou"] is not None))[:5]
        print(f"{m['split']}: mIoU {m['miou']:.2%}  pixel accuracy {m['pixel_acc']:.2%}  mean Dice {m['mean_dice']:.4f}  "
              f"({m['num_samples']} images, {len(m['classes'])} classes)")
        print("lowest IoU: " + ", ".join(f"{c} {i:.2%}" for i, c in worst))
        print(f"metrics: {Path(m['out_dir']) / 'metrics.json'} (per class: per_class.csv)")
        return
    print(f"{m['split']}: top-1 {m['top1']:.2%}  top-5 {m['top5']:.2%}  macro F1 {m['macro']['f1']:.4f}  "
          f"({m['num_samples']} images)")
    c = m["calibration"]
    print(f"calibration: ECE {c['ece']:.4f}, {c['ece_scaled']:.4f} at temperature {c['temperature']:.3f}"
          + (" (fitted on this split)" if c["temperature_fitted_here"] else " (the model file's)"))
    print(f"metrics: {Path(m['out_dir']) / 'metrics.json'}")
    print(f"output folder: {m['out_dir']}")


def cmd_predict(cfg: DictConfig) -> None:
    from imgcls.predict import predict_to_csv

    path, results = predict_to_csv(cfg.ckpt, cfg.source, cfg.out, project=cfg.project, top_k=cfg.top_k,
                                   device=cfg.device, min_score=cfg.get("min_score"))
    if results and "fps" in results[0]:  # a video: predict_video printed its frames per second
        v = results[0]
        print(f"per frame: {v['csv']} and {v['jsonl']}" + (f"; annotated video: {v['video']}" if v["video"] else ""))
        return
    errors = [r for r in results if r.get("error")]
    for r in results[:10]:
        if r.get("error"):
            print(f"{r['path']}: ERROR {r['error']}")
        elif "detections" in r:
            d = r["detections"]
            print(f"{r['path']}: {len(d)} object(s)" + (": " + ", ".join(f"{x['label']} {x['score']:.2f}" for x in d[:6])
                                                     if d else "") + (" ..." if len(d) > 6 else ""))
        elif "mask" in r:
            print(f"{r['path']}: " + ", ".join(f"{c} {v:.1%}" for c, v in r["pixel_share"].items()) + f"  ({r['overlay']})")
        else:
            print(f"{r['path']}: {r['label']} ({r['score']:.3f})")
    if len(results) > 10:
        print(f"... {len(results) - 10} more")
    if errors:
        print(f"{len(errors)} file(s) could not be read and were skipped (see the error column)")
    print(f"predictions: {path}")


def _name(value) -> str | None:
    """A class name from the command line: `target=3` arrives as an int, MNIST's class is "3"."""
    return None if value is None else str(value)


def _names(value) -> list[str] | None:
    """A list of names from the command line; a single value (`methods=gradcam`) is a list of one."""
    if value is None:
        return None
    return [str(v) for v in value] if OmegaConf.is_list(value) else [str(value)]


def _train_groups(cfg: DictConfig) -> dict:
    return {k: _plain(cfg, k) for k in TRAIN_GROUPS if k != "sched"}  # the study tools take no schedule


def cmd_lr_find(cfg: DictConfig) -> None:
    from imgcls.explain import lr_find

    r = lr_find(**_train_groups(cfg), start_lr=cfg.start_lr, end_lr=cfg.end_lr, steps=cfg.steps, out_dir=cfg.out)
    print(f"suggested learning rate: {r.suggestion:.3g} (optim.lr={r.suggestion:.3g}); "
          f"{len(r.lrs)} steps{', stopped when the loss diverged' if r.diverged else ''}")
    print(f"plot: {r.out_dir / 'lr_find.png'}")


def cmd_sanity(cfg: DictConfig) -> None:
    from imgcls.explain import sanity_check

    r = sanity_check(**_train_groups(cfg), batch_size=cfg.batch_size, max_steps=cfg.max_steps, lr=cfg.lr,
                     out_dir=cfg.out)
    print(r.message())
    print(f"training images with their labels: {r.out_dir / 'sanity_batch.png'}")
    if not r.passed:
        sys.exit(1)


def cmd_explain(cfg: DictConfig) -> None:
    from imgcls.explain import explain

    out, exps = explain(cfg.ckpt, cfg.source, methods=_names(cfg.methods), target=_name(cfg.target), layer=cfg.layer,
                        out_dir=cfg.out, project=cfg.project, device=cfg.device, max_images=cfg.max_images)
    for e in exps[:10]:
        print(f"{e.path}: predicted {e.predicted} ({e.score:.3f}), explained {e.label}")
    print(f"overlays: {out / 'gradcam.png'} (and one PNG per image and method)")


def cmd_embed(cfg: DictConfig) -> None:
    from imgcls.explain.embed import embed

    out = embed(cfg.ckpt, data=_plain(cfg, "data"), split=cfg.split, limit=cfg.limit, out_dir=cfg.out,
                project=cfg.project, device=cfg.device)
    print(f"embeddings and maps: {out / 'embeddings.safetensors'}, {out / 'pca.png'}, {out / 'tsne.png'}")


def cmd_search(cfg: DictConfig) -> None:
    from imgcls.explain.embed import search

    out, results = search(cfg.ckpt, cfg.index, cfg.query, k=cfg.k, out_dir=cfg.out, project=cfg.project,
                          device=cfg.device)
    for r in results:
        print(f"{r['similarity']:.3f}  {r['path']}")
    print(f"grid: {out / 'search.png'}")


def cmd_visualize(cfg: DictConfig) -> None:
    from imgcls.explain.visualize import visualize

    channels = cfg.channels if cfg.channels is None or OmegaConf.is_list(cfg.channels) else [cfg.channels]
    out, rows = visualize(cfg.ckpt, classes=_names(cfg.classes), layer=cfg.layer,
                          channels=[int(c) for c in channels] if channels is not None else None, steps=cfg.steps, lr=cfg.lr,
                          jitter=cfg.jitter, blur_every=cfg.blur_every, size=cfg.size, out_dir=cfg.out,
                          project=cfg.project, device=cfg.device)
    for r in rows:
        print(f"{r['target']}: objective {r['objective_before']:.3f} -> {r['objective_after']:.3f}  ({r['file']})")
    print(f"grid: {out / 'visualize.png'}")


def cmd_dream(cfg: DictConfig) -> None:
    from imgcls.explain.dream import dream

    out, r, layer = dream(cfg.source, cfg.ckpt, model=_plain(cfg, "model"), layer=cfg.layer, channel=cfg.channel,
                          objective=cfg.objective, octaves=cfg.octaves, octave_scale=cfg.octave_scale, steps=cfg.steps,
                          lr=cfg.lr, jitter=cfg.jitter, sigma=cfg.sigma, max_side=cfg.max_side, out_dir=cfg.out,
                          project=cfg.project, device=cfg.device, seed=cfg.seed)
    print(f"layer={layer}{'' if cfg.layer else ' (chosen: give layer=NAME for another)'}; objective ({cfg.objective}) "
          f"{r.before:.4f} -> {r.after:.4f} over {len(r.octaves)} octave(s)")
    print(f"dream: {out / 'dream.png'} (octaves: {out / 'octaves.png'})")


def cmd_ablate(cfg: DictConfig) -> None:
    from imgcls.ablation import run_ablation, spec_from_dict
    from imgcls.cli.launch import LauncherRunner, launcher_overrides, uses_launcher

    if cfg.get("ablation") is None:
        from imgcls.cli.help import compose_verb

        shipped = compose_verb("ablate", [])[2]["ablation"]
        raise ImgclsError(f"missing ablation=NAME: one of {', '.join(shipped)}, or your own study file "
                          "(DIR/ablation/NAME.yaml with hydra.searchpath=[file://DIR]; docs/ablation.md)")
    spec = spec_from_dict(_plain(cfg, "ablation"))
    out = cfg.out or str(Path(cfg.project) / "ablate" / spec.name)
    runner = None
    if uses_launcher():  # hydra/launcher=joblib|submitit_local|submitit_slurm|...: the runs go through it
        runner = LauncherRunner(_run_verb(cmd_train), launcher_overrides(), Path(out) / "launched", batch=cfg.batch)
    r = run_ablation(spec, out, train_overrides=[str(o) for o in cfg.train_overrides or []], max_runs=cfg.max_runs,
                     only=_names(cfg.only), check=cfg.check, rerun=_names(cfg.rerun), compose=compose_many, runner=runner)
    print(f"results: {r.table} ({len(r.ran)} run now, {len(r.skipped)} were there, {len(r.failed)} failed, "
          f"{len(r.pending)} pending)")
    for name, seed, err in r.failed:
        print(f"failed: {name} seed {seed}: {err.splitlines()[0]}")
    print(f"report: imgcls report study={out}")
    if r.failed:
        sys.exit(1)


def cmd_report(cfg: DictConfig) -> None:
    from imgcls.ablation import make_report

    r = make_report(cfg.study, out_dir=cfg.out, name=cfg.name, notes=cfg.notes, title=cfg.title, command=cfg.command)
    best = max(r.stats, key=lambda s: s.mean)
    print(f"{len(r.stats)} variants; best: {best.name} {best.mean:.2f}% over {best.n} seed(s)")
    print(f"report: {r.markdown} and {r.html} ({len(r.figures)} figures)")


def cmd_doctor(cfg: DictConfig) -> None:
    from imgcls.data.doctor import doctor

    r = doctor(_plain(cfg, "data"), out_dir=cfg.out, project=cfg.project, use_cache=cfg.cache, workers=cfg.workers)
    print(r.summary())
    print(f"report: {r.notes[-1]}/doctor.json")
    if cfg.strict and r.problems:
        sys.exit(1)


def cmd_export(cfg: DictConfig) -> None:
    from imgcls.deploy.export import export

    r = export(cfg.ckpt, cfg.format, cfg.out, images=cfg.images, data=_plain(cfg, "data"), split=cfg.split,
               check_images_n=cfg.check_images, atol=cfg.atol, min_agreement=cfg.min_agreement, overwrite=cfg.overwrite,
               opset=cfg.opset)
    print(f"parity: {r.parity.summary()}")
    print(f"export: {r.path} ({r.path.stat().st_size / 1e6:.2f} MB, {r.seconds:.1f}s)")


def cmd_quantize(cfg: DictConfig) -> None:
    from imgcls.deploy.quantize import quantize

    r = quantize(cfg.ckpt, cfg.mode, cfg.out, data=_plain(cfg, "data"), split=cfg.split, eval_images=cfg.eval_images,
                 calib_images=cfg.calib_images, overwrite=cfg.overwrite, keep_first=cfg.keep_first)
    print(r.summary())
    print(f"int8 model: {r.path}")


def cmd_prune(cfg: DictConfig) -> None:
    from imgcls.deploy.prune import prune_model

    r = prune_model(cfg.ckpt, cfg.amount, cfg.out, finetune_epochs=cfg.finetune_epochs, lr=cfg.lr,
                    batch_size=cfg.batch_size, data=_plain(cfg, "data"), split=cfg.split, device=cfg.device,
                    overwrite=cfg.overwrite)
    print(r.summary())
    print(f"pruned model file: {r.path}")


def cmd_serve(cfg: DictConfig) -> None:
    from imgcls.deploy.serve import ServeLimits, serve

    if not cfg.ckpt:
        raise ImgclsError("missing ckpt=PATH: the model file (or its .onnx / .pt2 export) to serve")
    limits = ServeLimits(max_file_bytes=int(cfg.max_file_mb * 2**20), max_request_bytes=int(cfg.max_request_mb * 2**20),
                         max_files=cfg.max_files, max_pixels=cfg.max_pixels)
    print(f"serving {cfg.ckpt} on http://{cfg.host}:{cfg.port}/ (POST /predict, GET /health, GET /model)")
    serve(cfg.ckpt, host=cfg.host, port=cfg.port, device=cfg.device, api_key=cfg.api_key, top_k=cfg.top_k,
          limits=limits, max_batch=cfg.max_batch, batch_window_ms=cfg.batch_window_ms)


VERBS: dict[str, tuple[Callable[[DictConfig], None], str]] = {
    "train": (cmd_train, "train a model (data=, model=, optim=, sched=, aug=, trainer=, experiment=)"),
    "evaluate": (cmd_evaluate, "score a model file: ckpt=PATH [data=NAME] -> metrics.json, confusion matrix"),
    "predict": (cmd_predict, "predict images: ckpt=PATH source=IMAGE_OR_FOLDER -> predictions.csv"),
    "lr-find": (cmd_lr_find, "learning-rate range test with train's configs -> lr_find.png, a suggested lr"),
    "explain": (cmd_explain, "Grad-CAM / Grad-CAM++ overlays: ckpt=PATH source=IMAGE_OR_FOLDER -> gradcam.png"),
    "embed": (cmd_embed, "embeddings of a data split: ckpt=PATH -> t-SNE and PCA maps"),
    "search": (cmd_search, "similar images: ckpt=PATH index=FOLDER query=IMAGE k=8 -> search.png"),
    "visualize": (cmd_visualize, "activation maximisation of classes or channels: ckpt=PATH -> visualize.png"),
    "dream": (cmd_dream, "DeepDream: ckpt=PATH source=PHOTO [layer=NAME] -> dream.png, octaves.png"),
    "sanity": (cmd_sanity, "overfit one batch (must reach 100%) + a grid of augmented images with labels"),
    "ablate": (cmd_ablate, "run an ablation study: ablation=NAME -> results.csv (resumable: finished runs are kept)"),
    "report": (cmd_report, "report of an ablation study: study=DIR -> report.md, report.html, plots"),
    "doctor": (cmd_doctor, "scan a data set: counts, sizes, modes, unreadable files, duplicates and train/test leakage"),
    "export": (cmd_export, "export a model file: ckpt=PATH format=onnx|pt2, checked against PyTorch on real images"),
    "quantize": (cmd_quantize, "int8 ONNX (onnxruntime): ckpt=PATH mode=static|dynamic, accuracy and speed before/after"),
    "prune": (cmd_prune, "global magnitude pruning: ckpt=PATH amount=0.5 [finetune_epochs=N] -> a pruned model file"),
    "serve": (cmd_serve, "HTTP API + web page: ckpt=PATH [port=8000 api_key=...] -> POST /predict, GET /"),
}


def usage() -> str:
    lines = ["usage: imgcls VERB [key=value ...] [-m for sweeps] [--help for a verb's options]", "", "verbs:"]
    lines += [f"  {v:<10} {doc}" for v, (_, doc) in VERBS.items()]
    lines += ["", "examples:", "  imgcls train experiment=mnist_mlp data.root=DIR",
              "  imgcls evaluate ckpt=runs/mnist-mlp/best.safetensors",
              "  imgcls predict ckpt=runs/mnist-mlp/best.safetensors source=images/"]
    return "\n".join(lines)


def _run_verb(fn: Callable[[DictConfig], object]) -> Callable[[DictConfig], object]:
    """The verb as Hydra's task function: returns what the verb returns (train: the sweeper's objective).

    A bad input (ImgclsError) is one line on stderr and exit code 2; in a multirun it fails that job
    only (recorded in its trial.json), so that a sweeper can go on with the next trial.
    """
    def task(cfg: DictConfig) -> object:
        from imgcls.cli.sweep import multirun_job, write_trial

        try:
            missing = sorted(OmegaConf.missing_keys(cfg))
            if missing:
                raise ImgclsError(f"missing {', '.join(k + '=...' for k in missing)} "
                                  f"(see `imgcls {fn.__name__[4:].replace('_', '-')} --help`)")
            return fn(cfg)
        except ImgclsError as e:
            print(f"error: {e}", file=sys.stderr)
            job = multirun_job()
            if job is None:
                sys.exit(2)
            if fn is cmd_train:
                write_trial(job, {"status": "failed", "error": str(e)})
            raise
        except Exception as e:
            job = multirun_job()
            if job is not None and fn is cmd_train:  # the trial is recorded as failed; the launcher reports the traceback
                write_trial(job, {"status": "failed", "error": f"{type(e).__name__}: {e}"})
            raise

    return task


def _auto_recipe(argv: list[str]) -> list[str]:
    """`imgcls train` on photos with model=auto and no experiment: put the recipe made for them first.

    Photos with pretrained weights on disk get experiment=photo_finetune, without them
    experiment=photo_scratch (imgcls.setup.choose_model decides); the user's overrides still win.
    """
    if any(a.startswith("-") or a.startswith(("experiment=", "+experiment=", "model=", "hydra.", "hparams_search=")) for a in argv):
        return argv  # a sweep or search, --help/--cfg, a chosen recipe or model: nothing to choose
    try:
        groups = compose_train(argv)
        if groups["model"]["name"] != "auto":
            return argv
        from imgcls.config import DataConfig, coerce
        from imgcls.setup import choose_model

        choice = choose_model(coerce(DataConfig, groups["data"], "data"), groups["trainer"]["device"], remember=True)
    except ImgclsError:
        return argv  # the run itself reports the problem
    if choice.recipe is None:
        return argv
    what = {"segment": "images with masks", "detect": "images with boxes"}.get(choice.task, "photos")
    dense = choice.task != "classify"
    given = dense and any(a.startswith("model.pretrained=") for a in argv)
    weights = "the pretrained weights given" if given else \
        f"{'' if choice.pretrained else 'no '}pretrained weights on disk"
    print(f"recipe: experiment={choice.recipe}, made for {what}, with {weights} (experiment=NAME picks another; "
          f"key=value overrides still apply)")
    weights = [f"model.pretrained={choice.model.pretrained}"] if dense and choice.model.pretrained \
        and not any(a.startswith("model.pretrained=") for a in argv) else []  # the recipe names its model: keep the file
    return [f"experiment={choice.recipe}", *weights, *argv]


# experiment=cifar10 (what `make train` runs): the CIFAR-10 recipe for the device this run will use.
DEVICE_RECIPES = {"cifar10": {"cuda": "cifar10_fast", "cpu": "cifar10_cpu10"}}


def _device_recipe(argv: list[str]) -> list[str]:
    """experiment=cifar10 becomes cifar10_fast on a CUDA GPU and the 10-minute CPU recipe elsewhere; says which and why."""
    at = [i for i, a in enumerate(argv) if a.lstrip("+").partition("=")[0] == "experiment"
          and a.partition("=")[2] in DEVICE_RECIPES]
    if not at:
        return argv
    i, value = at[-1], argv[at[-1]].partition("=")[2]
    import torch

    from imgcls.device import cpu_info

    wanted = next((x.partition("=")[2] for x in argv if x.startswith("trainer.device=")), "auto")
    cuda = (torch.cuda.is_available() and wanted in ("auto", "cuda")) or wanted.startswith("cuda:")
    recipe = DEVICE_RECIPES[value]["cuda" if cuda else "cpu"]
    if cuda:
        why = (f"a CUDA GPU ({torch.cuda.get_device_name()}): the 94% recipe, a few seconds of training "
               "(experiment=cifar10_cpu10 is the CPU's 10-minute recipe)")
    else:
        why = (f"no CUDA GPU{' used' if wanted != 'auto' else ''}, CPU {cpu_info().describe()}: the 10-minute recipe, its net "
               "sized to this machine in the first seconds (experiment=cifar10_fast is the 94% recipe: 20-80 minutes on a 2-core CPU)")
    print(f"recipe: experiment={recipe}, because {why}", flush=True)
    return [*argv[:i], f"experiment={recipe}", *argv[i + 1:]]


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    verb = argv.pop(0)
    if verb not in VERBS:
        print(f"error: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    if "--help" in argv or "-h" in argv:  # the verb's own help (Hydra's would list every group of every verb)
        from imgcls.cli.help import verb_help

        overrides = [a for a in argv if not a.startswith("-")]
        try:
            text = verb_help(verb, VERBS[verb][1], overrides)
        except Exception as e:  # e.g. a misspelt override: say so, and still show the verb's options
            if not overrides:
                raise
            print(f"error: {' '.join(overrides)} does not compose ({str(e).splitlines()[0]}); the defaults:\n", file=sys.stderr)
            text = verb_help(verb, VERBS[verb][1])
        print(text)
        return
    import hydra

    register_configs()
    if verb == "train":
        argv = _auto_recipe(_device_recipe(argv))
    sys.argv = [f"imgcls {verb}", *argv]
    hydra.main(version_base="1.3", config_path="pkg://imgcls.conf", config_name=verb.replace("-", "_"))(_run_verb(VERBS[verb][0]))()


if __name__ == "__main__":
    main()
