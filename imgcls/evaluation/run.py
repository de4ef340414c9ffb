"""`evaluate`: score a model file on a data split and write metrics.json, per_class.csv and plots."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imgcls.config import DataConfig, ModelConfig, coerce, model_config
from imgcls.data import DataBundle, Split, load_data, make_loader
from imgcls.data.image_io import open_image
from imgcls.device import select_device, set_threads
from imgcls.errors import ImgclsError
from imgcls.evaluation.calibration import calibration_report, plot_reliability
from imgcls.evaluation.infer import predict_logits
from imgcls.evaluation.metrics import compute_metrics, most_confused, write_metrics, write_per_class_csv, write_rows_csv
from imgcls.evaluation.plots import plot_confusion_matrix, plot_image_grid
from imgcls.modelfile import ModelMeta, save_model
from imgcls.models import load_model
from imgcls.models.build import build_model, head_parameter_names
from imgcls.run_dir import new_run_dir
from imgcls.setup import fill_data_defaults
from imgcls.tasks import task_for


def evaluate_model(model: nn.Module, bundle: DataBundle, split: str, out_dir: Path, *, device: torch.device,
                   batch_size: int = 1000, amp_dtype=None, workers: int = 2, tta: int = 0,
                   temperature: float | None = None, worst_k: int = 24) -> dict:
    """Metrics of `model` on `bundle.<split>`, written to out_dir.

    Files: metrics.json, per_class.csv, confusion_matrix.png, most_confused.csv, calibration.json and
    reliability.png (ECE before and after temperature scaling with `temperature`, or with one fitted on
    this split when None), worst.csv and worst_images.png (the `worst_k` most confidently wrong images).
    """
    data = getattr(bundle, split, None)
    if data is None or len(data) == 0:
        raise ImgclsError(f"data set {bundle.name!r} has no {split!r} split; choose split=train|val|test")
    loader = make_loader(bundle, data, train=False, batch_size=batch_size, device=device, workers=workers)
    logits, labels, plain = predict_logits(model, loader, device=device, amp_dtype=amp_dtype, tta=tta, with_plain=True,
                                           desc=f"evaluate {split}")
    metrics = compute_metrics(logits, labels, bundle.classes, loss=F.cross_entropy(logits, labels).item())
    metrics["split"], metrics["tta"] = split, tta
    if tta:  # what TTA adds: the plain view's top-1 from the same pass
        metrics["top1_no_tta"] = (plain.argmax(1) == labels).float().mean().item()
    out_dir.mkdir(parents=True, exist_ok=True)
    cal = calibration_report(plain, labels, temperature)  # plain logits: what Predictor computes and divides by T
    (out_dir / "calibration.json").write_text(json.dumps(cal, indent=2) + "\n")
    plot_reliability(cal, out_dir / "reliability.png", title=f"{bundle.name} {split}")
    metrics["calibration"] = {k: cal[k] for k in ("temperature", "temperature_fitted_here", "ece", "ece_scaled", "nll",
                                                  "nll_scaled")}
    write_metrics(metrics, out_dir / "metrics.json")
    write_per_class_csv(metrics, out_dir / "per_class.csv")
    write_rows_csv(most_confused(metrics), out_dir / "most_confused.csv", ["true", "predicted", "count", "share_of_true"])
    plot_confusion_matrix(metrics["confusion_matrix"], bundle.classes, out_dir / "confusion_matrix.png",
                          title=f"{bundle.name} {split}: top-1 {metrics['top1']:.2%}")
    write_worst(logits, labels, data, bundle, out_dir, worst_k)
    return metrics


def write_worst(logits: torch.Tensor, labels: torch.Tensor, data, bundle: DataBundle, out_dir: Path, k: int) -> None:
    """worst.csv and worst_images.png: the wrong predictions made with the least probability on the true class."""
    probs = logits.softmax(1)
    score, pred = probs.max(1)
    true_prob = probs[torch.arange(len(labels)), labels]
    wrong = (pred != labels).nonzero().flatten()
    order = wrong[true_prob[wrong].argsort()][:k].tolist()
    rows = [{"id": data.ids[i], "true": bundle.classes[int(labels[i])], "predicted": bundle.classes[int(pred[i])],
             "score": round(float(score[i]), 4), "true_class_prob": round(float(true_prob[i]), 4)} for i in order]
    write_rows_csv(rows, out_dir / "worst.csv", ["id", "true", "predicted", "score", "true_class_prob"])
    if rows:
        images = [_thumbnail(data, i, bundle.channels) for i in order]
        captions = [f"{r['true']} -> {r['predicted']}\n{r['score']:.2f}" for r in rows]
        plot_image_grid(images, captions, out_dir / "worst_images.png",
                        title="most confidently wrong (true -> predicted, score)")


def _thumbnail(data, i: int, channels: int, side: int = 128) -> np.ndarray:
    if data.images is not None:
        return data.images[i].permute(1, 2, 0).numpy()
    try:
        img = open_image(data.ids[i], channels)
    except ImgclsError:  # an unreadable file (the loader skipped it): a grey tile
        return np.full((side, side, channels), 128, dtype=np.uint8)
    img.thumbnail((side, side))
    return np.asarray(img)


def data_for_model(meta: ModelMeta, data: DataConfig | dict | str | None = None, split: str = "test", *,
                   source: str = "the model file") -> tuple[DataBundle, DataConfig]:
    """The data set a model file was trained on (or `data`), in the model's own input format.

    Images get the model's size, channels and normalization whatever the data set's defaults are;
    the classes must be the model's.
    """
    if data is None:
        if "data" not in meta.train:
            raise ImgclsError(f"{source} does not record its data set; pass data=NAME (and data.root=DIR)")
        data = meta.train["data"]
    cfg = coerce(DataConfig, data, "data")
    pre = meta.preprocess
    square = pre.input_size[0] == pre.input_size[1]  # a non-square size is the data's own: keep it
    cfg = dataclasses.replace(cfg, channels=pre.channels, image_size=pre.input_size[0] if square else None,
                              mean=pre.mean, std=pre.std,
                              val_fraction=cfg.val_fraction if split == "val" else 0.0)
    bundle = load_data(cfg)
    if bundle.classes != meta.classes:
        raise ImgclsError(f"the classes of data set {cfg.name!r} ({len(bundle.classes)}: {bundle.classes[:5]}...) differ from "
                          f"the model's ({len(meta.classes)}: {meta.classes[:5]}...); evaluate on data with the same class folders")
    return bundle, cfg


def split_for_model(meta: ModelMeta, data: DataConfig | dict | str | None, split: str, *, source: str = "the model file",
                    purpose: str = "") -> tuple[DataBundle, Split, DataConfig]:
    """`data_for_model` and its non-empty `split`; an error says what the split was wanted for (`purpose`)."""
    bundle, cfg = data_for_model(meta, data, split, source=source)
    ds = getattr(bundle, split, None)
    if ds is None or not len(ds):
        raise ImgclsError(f"data set {cfg.name} has no {split} split" + (f" {purpose}" if purpose else ""))
    return bundle, ds, cfg


def evaluate(ckpt: str | Path | None = None, *, model: ModelConfig | dict | str | None = None,
             data: DataConfig | dict | str | None = None, split: str = "test",
             out_dir: str | Path | None = None, project: str = "runs", batch_size: int = 1000,
             device: str = "auto", threads: int | None = None, tta: int | None = None,
             calibrate: bool = False) -> dict:
    """Evaluate the model file `ckpt` on a data set (default: the one it was trained on).

    Calibration is reported with the temperature stored in the model file (fitted on the validation
    split at training time); a file without one gets one fitted on this split, for information.
    `calibrate=True` fits the temperature on this split and writes it into the model file, so that
    `Predictor` scores become calibrated (use a split the model was not selected on, e.g. val).

    Without `ckpt`, evaluates `model` (a registered name with `pretrained=WEIGHTS`, e.g. published
    weights) on `data`; the normalization is the weights' own when known (timm/torchvision, imgcls
    model files), else give the one they were trained with as data.mean/data.std.
    Returns the metrics dict (also written to `<out_dir>/metrics.json`, with `out_dir` added under
    the key "out_dir"). `tta` is the test-time augmentation level; None = the one it was trained with.
    """
    if ckpt is not None and model is not None:
        raise ImgclsError("pass either ckpt=PATH (a model file carries its architecture) or model=NAME with "
                          "model.pretrained=WEIGHTS, not both")
    if ckpt is None:
        if calibrate:
            raise ImgclsError("calibrate=true writes the temperature into a model file: pass ckpt=PATH")
        return _evaluate_pretrained(model, data=data, split=split, out_dir=out_dir, project=project,
                                    batch_size=batch_size, device=device, threads=threads, tta=tta or 0)
    set_threads(threads)
    dev = select_device(device)
    model = load_model(ckpt, device=dev)
    meta = model.meta
    bundle, cfg = data_for_model(meta, data, split, source=str(ckpt))
    out = Path(out_dir) if out_dir else new_run_dir(project, f"eval-{Path(ckpt).parent.name or 'model'}")
    if meta.task != "classify":  # the task's own metrics and files (segmentation: mIoU, IoU per class)
        if calibrate:
            raise ImgclsError(f"calibrate=true fits a classifier's softmax temperature; {ckpt} is a {meta.task} model")
        metrics = task_for(bundle).evaluate(model, bundle, split, out, device=dev, batch_size=min(batch_size, 16),
                                            workers=cfg.workers)
        metrics["out_dir"] = str(out)
        return metrics
    if tta is None:
        tta = int(meta.train.get("config", {}).get("trainer", {}).get("tta", 0))
    stored = None if calibrate else meta.calibration.get("temperature")
    metrics = evaluate_model(model, bundle, split, out, device=dev, batch_size=batch_size, workers=cfg.workers, tta=tta,
                             temperature=stored)
    metrics["out_dir"] = str(out)
    if calibrate:
        t = metrics["calibration"]["temperature"]
        meta.calibration = {"temperature": t, "fitted_on": f"{cfg.name}:{split}", "tta": tta,
                            "ece_before": metrics["calibration"]["ece"], "ece_after": metrics["calibration"]["ece_scaled"]}
        save_model(ckpt, model, meta)
        print(f"temperature {t:.3f} written into {ckpt} (ECE {metrics['calibration']['ece']:.4f} -> "
              f"{metrics['calibration']['ece_scaled']:.4f} on {split})")
    return metrics


def _evaluate_pretrained(model: ModelConfig | dict | str | None, *, data, split: str, out_dir, project: str,
                         batch_size: int, device: str, threads: int | None, tta: int) -> dict:
    mcfg = model_config(model) if model is not None else None
    if mcfg is None or not mcfg.pretrained:
        raise ImgclsError("nothing to evaluate: pass ckpt=PATH (an imgcls model file), "
                          "or model=NAME model.pretrained=WEIGHTS data=NAME")
    if data is None:
        raise ImgclsError("model.pretrained needs data=NAME (with data.root=DIR, and for a plain weights file "
                          "data.mean/data.std set to the normalization the weights were trained with)")
    set_threads(threads)
    dev = select_device(device)
    cfg, _ = fill_data_defaults(coerce(DataConfig, data, "data"), mcfg)
    bundle = load_data(dataclasses.replace(cfg, val_fraction=cfg.val_fraction if split == "val" else 0.0))
    net, _, report = build_model(mcfg, num_classes=len(bundle.classes), in_chans=bundle.channels,
                                 image_size=bundle.image_size)
    fresh = head_parameter_names(net) & set((report.missing + report.mismatched) if report else [])
    if fresh:
        raise ImgclsError(f"the classifier in {mcfg.pretrained} does not fit the {len(bundle.classes)} classes of "
                          f"{bundle.name} ({', '.join(sorted(fresh))} not loaded): scores of a random head mean nothing; "
                          f"fine-tune it with `imgcls train ... model.pretrained=...` instead")
    out = Path(out_dir) if out_dir else new_run_dir(project, f"eval-{mcfg.name}")
    metrics = evaluate_model(net.to(dev), bundle, split, out, device=dev, batch_size=batch_size, workers=cfg.workers,
                             tta=tta)
    metrics["out_dir"] = str(out)
    metrics["pretrained"] = report.summary() if report else f"{mcfg.name} {mcfg.args.get('arch', '')}: library weights"
    return metrics
