"""Option groups of a training run, as plain dataclasses: every hyperparameter is defined here, once.

The Hydra configs in `conf/` use these classes as schemas (so a typo in a key is an error) and only
state what differs; Python callers pass a dataclass, a dict of overrides, or nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from imgcls.errors import ImgclsError


@dataclass
class DataConfig:
    name: str = "cifar10"  # cifar10 | mnist | folder | caltech101 | a torchvision data set class (FashionMNIST, SVHN, ...)
    root: str | None = None  # directory holding data sets; None = $IMGCLS_DATA, else ./data
    download: bool = True  # let torchvision download a missing data set (needs network)
    val_fraction: float = 0.1  # held-out share of train when there is no validation folder; 0 = none (best = last)
    # share held out as test when there is no test split; None = the data set's (0.2 for caltech101, else 0)
    test_fraction: float | None = None
    split_seed: int = 0  # seed of the stratified train/val(/test) split (kept apart from the training seed)
    image_size: int | None = None  # side the model sees; None = native size (small images) or 224 (large)
    channels: int | None = None  # 1 or 3; None = the data set's own (1 for MNIST, 3 otherwise)
    mean: list[float] | None = None  # normalization; None = the data set's published values
    std: list[float] | None = None  # per-channel std on [0, 1] pixels; None = the data set's published values
    small_max: int = 64  # images seen at most this many pixels a side (native, or image_size) are decoded once into a tensor cache
    cache_dir: str | None = None  # decode cache; None = $IMGCLS_CACHE, else ~/.cache/imgcls
    workers: int = 2  # DataLoader workers for photos read from their files (decoded photos are cropped in the training process)
    # photos: decode and resize each file once (to the evaluation resize, ~1.14x image_size) into an on-disk store
    # read memory-mapped, so epochs crop uint8 arrays instead of decoding JPEGs; false = decode the files every epoch
    photo_cache: bool = True
    limit: int | None = None  # use a seeded random N samples of each split (quick tests)
    sampler: str = "random"  # random | balanced (each class drawn equally often, with replacement: for imbalanced data)
    # Segmentation masks (data=segfolder): the classes to keep, each "name" (a class as it is) or "new=old1|old2"
    # (classes merged), e.g. [person] (person vs rest) or [person, vehicle=car|bus|truck]; every other labelled class
    # becomes `rest` (or is ignored when rest is null). [] = every class of the data set as it is
    merge: list[str] = field(default_factory=list)
    rest: str | None = "background"  # the class the classes left out of `merge` become
    ignore_index: int = 255  # the mask value that is no class (unlabelled, object borders): loss and metrics skip it


@dataclass
class AugConfig:
    flip: bool | None = None  # horizontal flips; None = the data set's default (on, but off for MNIST digits)
    flip_mode: str = "random"  # random | alternate (each image mirrored in every other epoch, as airbench: more diverse)
    crop_pad: int = 4  # small images: random translate by up to this many pixels (pad-and-crop); 0 = off
    small_crop: int | None = None  # small images: random crops of this side early on (cheaper steps, same scale)
    small_crop_until: float = 0.5  # ... for this share of training, then on full images
    crop_scale: list[float] = field(default_factory=lambda: [0.35, 1.0])  # large images: RandomResizedCrop area range
    cutout: int = 0  # side in pixels of a square erased at a random place in each training image (DeVries & Taylor); 0 = off
    policy: str = "none"  # none | trivialaugment | randaugment | autoaugment: torchvision's per-image policy (on uint8 images)
    policy_group: int = 1  # small images: this many consecutive images share one draw of the policy (8 = ~6x cheaper on CPU)
    mixup: float = 0.0  # MixUp Beta(alpha, alpha) of pairs of images and their labels in each batch; 0 = off
    cutmix: float = 0.0  # CutMix alpha (a box of one image pasted into another, labels by area); 0 = off. Both on: one of the two per batch


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adam | adamw | muon (Muon for conv filters, Nesterov SGD for the rest)
    lr: float = 0.1  # peak learning rate (after warmup) of the SGD/AdamW groups, for a batch-mean loss
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = True  # Nesterov momentum (SGD and the SGD groups of muon)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam and AdamW
    # Adam: weight_decay is an L2 term added to the gradient; AdamW: decoupled (the weights shrink by lr * weight_decay)
    weight_decay: float = 5e-4  # on conv/linear weights; never on norms or biases unless decay_norms
    weight_decay_per_step: bool = False  # True: weight_decay = share a weight shrinks per step at peak lr, any lr
    decay_norms: bool = False  # also decay 1-d parameters (norm shifts, biases)
    bias_lr_scale: float = 1.0  # lr multiplier for 1-d parameters
    muon_lr: float = 0.24  # Muon: step size of the orthogonalized update of each conv filter bank
    muon_momentum: float = 0.6  # Muon's (Nesterov) momentum; lower than SGD's since its steps are normalized
    muon_ns_steps: int = 3  # Newton-Schulz iterations
    # Parameter-name pattern -> share of training after which those parameters freeze (their lr decays
    # linearly to 0 by then), e.g. {"whiten.bias": 0.375}: cheaper steps once they matter no more.
    stop: dict[str, float] = field(default_factory=dict)
    # Discriminative learning rates (fastai's lr_mult): the head trains at lr, the first layer group at
    # lr / lr_mult, the groups in between (the model's top-level blocks) geometrically in between.
    lr_mult: float = 1.0


@dataclass
class SchedConfig:
    name: str = "cosine"  # cosine | onecycle | linear | step | constant
    warmup: float = 0.0  # share of all steps spent ramping the lr up linearly from 0
    final_factor: float = 0.0  # lr at the end, as a fraction of the peak (cosine, linear)
    div_factor: float = 25.0  # onecycle: start lr = peak / div_factor
    step_size: float = 0.33  # step: decay every this share of training ...
    gamma: float = 0.1  # ... by this factor


@dataclass
class LossConfig:
    # Per-class weights of the cross-entropy: None, "balanced" (n_samples / (n_classes * class count),
    # scikit-learn's rule: rare classes weigh more) or a list with one weight per class.
    class_weights: Any = None


@dataclass
class TrainerConfig:
    epochs: int = 10  # passes over the training set (an upper bound when time_budget is set)
    batch_size: int = 128  # images per step; scale optim.lr with it (linear scaling rule)
    eval_batch_size: int = 1000  # images per inference batch (memory only, no effect on results)
    seed: int = 0  # weights, shuffling, augmentation
    label_smoothing: float = 0.0  # share of the target mass spread over all classes (0.1-0.2 is common)
    ema_decay: float = 0.0  # exponential moving average of weights per step; 0 = off (e.g. 0.999)
    patience: int = 0  # early stopping: epochs without val improvement before stopping; 0 = off
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    threads: int | None = None  # CPU threads; None = all cores
    amp: bool = True  # mixed precision on CUDA (bf16 if supported, else fp16); on a CPU see cpu_bf16
    # bf16 autocast on a CPU with native bf16 (AVX512_BF16 or AMX flags), if a training step measures >= 1.1x faster
    # with it at the start of the run; fp32 elsewhere (AVX2-only CPUs emulate bf16, many times slower). The line says which.
    cpu_bf16: bool = False
    channels_last: bool | None = None  # None = on for CUDA, off for CPU
    compile: bool = False  # torch.compile the model
    project: str = "runs"  # parent folder of run folders
    name: str | None = None  # run folder name; None = "<data>-<model>"; a taken name gets -2, -3, ...
    resume: Any = False  # true = continue the latest run named `name`; or a run folder path
    progress: bool | None = None  # progress bars; null = on when the output is a terminal (or as $IMGCLS_PROGRESS says)
    limit_batches: int | None = None  # stop each epoch after N batches (quick tests)
    time_budget: float | None = None  # wall seconds from process start to test metrics; the schedule adapts to fit
    tta: int = 0  # test-time augmentation level of the final test evaluation: 0 none, 1 mirror, 2 mirror + shifts
    init_images: int = 5000  # training images given to a model's data-dependent init (e.g. patch whitening)
    freeze_epochs: int = 0  # fine-tuning (fastai style): train only the head for this many epochs, then everything
    # Bit-identical reruns: deterministic kernels only (an error names any op without one), no cuDNN
    # autotuning. Same seed, device, thread count and library versions give the same weights and
    # results.csv (but its seconds). Not with time_budget (the clock decides how far training gets).
    deterministic: bool = False
    # Under torchrun on GPUs: batch-norm statistics computed over the global batch instead of each
    # process's slice (nn.SyncBatchNorm). Worth it when the per-GPU batch is small (< ~32 images).
    sync_batchnorm: bool = False
    # A recipe sized to the machine (with time_budget; imgcls/sizing.py): model.args overrides, largest net first.
    # The run times each candidate's training step on its data and trains the first that fits size_min_epochs
    # epochs in the time left (else the last). null = the model as configured.
    size_choices: list[dict[str, Any]] | None = None
    size_min_epochs: float = 4.0
    accum_steps: int = 1  # gradient accumulation: batches summed into each optimizer step (effective batch = batch_size x this)
    clip_grad: float | None = None  # cap on the gradients' global L2 norm before each optimizer step; null = no clipping
    # the validation number that picks best.safetensors and drives early stopping: val_acc | val_loss | val_f1 (macro F1)
    # | val_miou (segmentation; there val_acc is pixel accuracy) | val_map, val_map50 (detection: COCO mAP@[.5:.95], AP50);
    # val_acc on a task without it (detection) means the task's first monitor
    monitor: str = "val_acc"
    # validate every N epochs (and after the last): detection's validation costs as much as a training epoch on a CPU
    val_every: int = 1
    # experiment tracking (imgcls/training/trackers.py): csv | tensorboard | mlflow, or a list of them; null = none
    # (results.csv and metrics.json are always written). tensorboard: RUN/tensorboard; mlflow: see mlflow_uri
    logger: Any = None
    mlflow_uri: str | None = None  # MLflow tracking URI; null = sqlite:///<project>/mlflow.db (artifacts in <project>/mlartifacts)
    mlflow_experiment: str = "imgcls"  # MLflow experiment the runs are logged under


@dataclass
class ModelConfig:
    # registered name (`imgcls.list_models()`), or auto: chosen for the data (imgcls.setup.choose_model)
    name: str = "auto"
    args: dict[str, Any] = field(default_factory=dict)  # builder options (e.g. width), besides the fixed keys
    # weights file to start from (.pt/.pth/.th/.safetensors or an imgcls model file); true = the library's (timm/torchvision)
    pretrained: str | None = None
    freeze: str | None = None  # backbone = feature extraction: only the head trains (frozen batch-norm statistics too)


AUG_POLICIES = ("none", "trivialaugment", "randaugment", "autoaugment")


def _check(value: Any, allowed: tuple, key: str) -> None:
    if value not in allowed:
        raise ImgclsError(f"{key}={value!r} is not one of: {', '.join(map(str, allowed))}")


def validate(cfg: Any) -> None:
    """Reject bad enum values at the start of a run, not after an hour of training."""
    if isinstance(cfg, AugConfig):
        _check(cfg.flip_mode, ("random", "alternate"), "aug.flip_mode")
        _check(cfg.policy, AUG_POLICIES, "aug.policy")
        if cfg.policy_group < 1:
            raise ImgclsError(f"aug.policy_group={cfg.policy_group} must be >= 1")
        for key in ("cutout", "mixup", "cutmix"):
            if getattr(cfg, key) < 0:
                raise ImgclsError(f"aug.{key}={getattr(cfg, key)} must be >= 0 (0 = off)")
    elif isinstance(cfg, OptimConfig):
        _check(cfg.name, ("sgd", "adam", "adamw", "muon"), "optim.name")
        if cfg.lr_mult < 1:
            raise ImgclsError(f"optim.lr_mult={cfg.lr_mult} must be >= 1 (the head's lr over the first layer's)")
    elif isinstance(cfg, SchedConfig):
        _check(cfg.name, ("cosine", "onecycle", "linear", "step", "constant"), "sched.name")
    elif isinstance(cfg, TrainerConfig):
        _check(cfg.tta, (0, 1, 2), "trainer.tta")
        _check(cfg.monitor, ("val_acc", "val_loss", "val_f1", "val_miou", "val_map", "val_map50"), "trainer.monitor")
        if cfg.val_every < 1:
            raise ImgclsError(f"trainer.val_every={cfg.val_every} must be >= 1 (1 = validate after every epoch)")
        from imgcls.training.trackers import logger_names

        logger_names(cfg.logger)  # names every unknown logger
        if cfg.accum_steps < 1:
            raise ImgclsError(f"trainer.accum_steps={cfg.accum_steps} must be >= 1 (1 = no accumulation)")
        if cfg.clip_grad is not None and cfg.clip_grad <= 0:
            raise ImgclsError(f"trainer.clip_grad={cfg.clip_grad} must be > 0, or null for no clipping")
        if cfg.freeze_epochs < 0 or cfg.freeze_epochs >= cfg.epochs and cfg.freeze_epochs:
            raise ImgclsError(f"trainer.freeze_epochs={cfg.freeze_epochs} must be in [0, trainer.epochs={cfg.epochs})")
        if cfg.deterministic and cfg.time_budget:
            raise ImgclsError("trainer.deterministic=true cannot be combined with trainer.time_budget: how far a "
                              "time-budgeted run gets depends on the machine's speed; give trainer.epochs instead")
        if cfg.epochs < 1 or cfg.batch_size < 1:
            raise ImgclsError(f"trainer.epochs and trainer.batch_size must be >= 1, got {cfg.epochs}, {cfg.batch_size}")
        if cfg.size_choices is not None and not (isinstance(cfg.size_choices, (list, tuple)) and cfg.size_choices
                                                 and all(isinstance(c, dict) for c in cfg.size_choices)):
            raise ImgclsError(f"trainer.size_choices={cfg.size_choices!r} must be null or a non-empty list of "
                              "model.args overrides, e.g. [{widths: [64, 256, 256]}, {widths: [64, 128, 128]}]")
    elif isinstance(cfg, DataConfig):
        _check(cfg.channels, (None, 1, 3), "data.channels")
        _check(cfg.sampler, ("random", "balanced"), "data.sampler")
    elif isinstance(cfg, LossConfig):
        w = cfg.class_weights
        if not (w is None or w == "balanced" or (isinstance(w, (list, tuple)) and all(isinstance(v, (int, float)) and v >= 0 for v in w)
                                                 and sum(w) > 0)):
            raise ImgclsError(f"loss.class_weights={w!r} must be null, balanced or a list of non-negative numbers, not all 0")


C = TypeVar("C")


@dataclass
class ServeConfig:
    """`imgcls serve`'s options: the schema of conf/serve.yaml and the defaults of `imgcls.deploy.serve`."""

    ckpt: str | None = None  # a model file, or its .onnx / .pt2 export
    host: str = "127.0.0.1"  # loopback only; 0.0.0.0 to serve other machines
    port: int = 8000
    device: str = "cpu"
    api_key: str | None = None  # when set, /predict, /explain, /model need header X-API-Key (or Authorization: Bearer)
    top_k: int = 5  # default number of labels per image (?top_k=N per request)
    max_file_mb: float = 10  # per uploaded file
    max_request_mb: float = 64  # per request (Content-Length), checked before reading
    max_files: int = 32  # files per request
    max_pixels: int = 40_000_000  # per image, checked before decoding (decompression bombs)
    max_batch: int = 64  # images per model call when concurrent requests are batched
    batch_window_ms: float = 5.0  # how long the first request of a batch waits for others


# The option groups of a training run, in the order configs list them; every group but `model` (a
# name plus free builder options, see `model_config`) has a dataclass schema.
TRAIN_GROUPS = ("data", "model", "optim", "sched", "aug", "loss", "trainer")
GROUP_SCHEMAS = {"data": DataConfig, "optim": OptimConfig, "sched": SchedConfig, "aug": AugConfig, "loss": LossConfig,
                 "trainer": TrainerConfig}


def group_config(group: str, value: Any):
    """The dataclass of option group `group` (any of TRAIN_GROUPS) from None, a dataclass, a dict or (model) a name."""
    return model_config(value) if group == "model" else coerce(GROUP_SCHEMAS[group], value, group)


def coerce(cls: type[C], value: Any, group: str) -> C:
    """Turn None, a dataclass or a dict of overrides into `cls`; unknown keys name the group."""
    cfg = _coerce(cls, value, group)
    validate(cfg)
    return cfg


def _coerce(cls: type[C], value: Any, group: str) -> C:
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, str) and "name" in {f.name for f in dataclasses.fields(cls)}:
        return cls(name=value)
    if not isinstance(value, dict):
        raise ImgclsError(f"{group}: expected a dict or {cls.__name__}, got {type(value).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ImgclsError(f"unknown {group} option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls(**value)


def model_config(value: Any) -> ModelConfig:
    """A model group is a name plus free builder options: {"name": "mlp", "hidden": [64]}."""
    if isinstance(value, ModelConfig):
        return value
    if isinstance(value, str):
        return ModelConfig(name=value)
    if value is None:
        return ModelConfig()
    value = dict(value)
    name = value.pop("name", ModelConfig.name)
    pretrained = value.pop("pretrained", None)
    freeze = value.pop("freeze", None)
    adapter = value.pop("adapter", None)  # model=timm / model=torchvision: `name` is the library's model name
    args = dict(value.pop("args", {}) or {})
    args.update(value)
    if adapter:
        args["arch"], name = name, adapter
    return ModelConfig(name=name, args=args, pretrained=str(pretrained) if pretrained not in (None, False, "") else None,
                       freeze=None if freeze in (None, "none", False) else str(freeze))
