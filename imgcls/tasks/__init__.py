"""Tasks: what differs between one label per image (classify) and one label per pixel (segment).

A task is an object with the same few methods (duck-typed, no base class): the training loss, the
training accuracy's counts, the validation numbers of an epoch, the final scoring of a split, and
the columns and monitors those add. The loop, run folder, budgets, resume, trackers, sweeps, model
files and CLI are shared and call these; a data bundle says which task it is for (`DataBundle.task`),
and a model file records it (`ModelMeta.task`). Detection (boxes) is the third; its batches are lists and its
models compute their own losses, so it also gives the loop `to_device` and `forward_loss` (optional methods).
"""

from __future__ import annotations

TASKS = ("classify", "segment", "detect")


def get_task(name: str):
    """The task object of `name` (imported on first use: segmentation pulls in its models and data formats)."""
    if name == "classify":
        from imgcls.tasks.classify import CLASSIFY

        return CLASSIFY
    if name == "segment":
        from imgcls.tasks.segment import SEGMENT

        return SEGMENT
    if name == "detect":
        from imgcls.tasks.detect import DETECT

        return DETECT
    from imgcls.errors import ImgclsError

    raise ImgclsError(f"unknown task {name!r}; one of: {', '.join(TASKS)}")


def task_for(bundle):
    """The task of a data bundle, with the bundle's own settings (the ignore index of its masks)."""
    task = get_task(bundle.task)
    if getattr(task, "ignore_index", None) not in (None, bundle.ignore_index):
        task = type(task)()
        task.ignore_index = bundle.ignore_index
    return task


def effective_monitor(monitor: str, task) -> str:
    """trainer.monitor as a task uses it: the default val_acc means the task's first monitor where it has no accuracy
    (detection: val_map)."""
    return next(iter(task.monitors)) if monitor == "val_acc" and monitor not in task.monitors else monitor


def require_classifier(task: str, what: str) -> None:
    """A clear error when a tool made for classifiers meets another task's model or data."""
    if task != "classify":
        from imgcls.errors import ImgclsError

        raise ImgclsError(f"{what} works on classifiers; this is a {task} model or data set (what each verb does for "
                          f"{task}: docs/{'detection' if task == 'detect' else 'segmentation'}.md)")
