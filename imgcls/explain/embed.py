"""Penultimate-layer embeddings: t-SNE and PCA maps of a data set, and nearest-neighbour image search.

The embedding of an image is the model's pre-logits vector, `forward_head(forward_features(x),
pre_logits=True)`, the input of the classifier. Search compares L2-normalized embeddings by cosine
similarity; an index of a folder is saved in the cache as a safetensors file (embeddings and file
list, named by a fingerprint of the folder's files and the model) and reused while neither changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from safetensors.torch import load_file, save_file

from imgcls.errors import ImgclsError
from imgcls.progress import progress_bar
from imgcls.tasks import require_classifier


def embed_batch(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if not hasattr(model, "forward_head"):
        raise ImgclsError(f"{type(model).__name__} has no forward_features/forward_head split to take embeddings from")
    with torch.no_grad():
        return model.forward_head(model.forward_features(x), pre_logits=True).flatten(1).float().cpu()


def embed_loader(model: torch.nn.Module, loader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    feats, labels = [], []
    for x, y in progress_bar(loader, desc="embed", unit="batch"):
        feats.append(embed_batch(model, x.to(device)))
        labels.append(y.cpu())
    return torch.cat(feats), torch.cat(labels)


def plot_embedding(points: np.ndarray, labels: np.ndarray, classes: list[str], path: Path, title: str) -> Path:
    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot(1, 1, 1)
    cmap = "tab10" if len(classes) <= 10 else "tab20"
    sc = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap=cmap, s=6, alpha=0.8, vmin=0, vmax=max(len(classes) - 1, 1))
    if len(classes) <= 20:
        handles = [ax.scatter([], [], color=sc.cmap(sc.norm(i)), label=c, s=20) for i, c in enumerate(classes)]
        ax.legend(handles=handles, fontsize=7, loc="best", markerscale=1.2)
    ax.set(title=title, xticks=[], yticks=[])
    from imgcls.evaluation.plots import save_figure

    return save_figure(fig, path)


def embed(ckpt: str | os.PathLike, *, data=None, split: str = "test", limit: int | None = 2000,
          out_dir: str | os.PathLike | None = None, project: str = "runs", device: str = "auto",
          seed: int = 0) -> Path:
    """embeddings.safetensors (features, labels), pca.png and tsne.png for (a seeded sample of) a split."""
    import dataclasses

    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from imgcls.config import DataConfig, coerce
    from imgcls.data import load_data, make_loader
    from imgcls.device import select_device
    from imgcls.models import load_model
    from imgcls.run_dir import new_run_dir

    dev = select_device(device)
    model = load_model(ckpt, device=dev)
    require_classifier(model.meta.task, "imgcls embed (the penultimate layer of a classifier)")
    meta = model.meta
    cfg = coerce(DataConfig, data if data is not None else meta.train.get("data"), "data")
    pre = meta.preprocess
    cfg = dataclasses.replace(cfg, channels=pre.channels, mean=pre.mean, std=pre.std,
                              image_size=pre.input_size[0] if pre.input_size[0] == pre.input_size[1] else None)
    bundle = load_data(cfg)
    data_split = getattr(bundle, split, None)
    if data_split is None or not len(data_split):
        raise ImgclsError(f"data set {bundle.name!r} has no {split!r} split")
    if limit and len(data_split) > limit:
        keep = torch.randperm(len(data_split), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
        data_split = data_split.subset(keep)
    feats, labels = embed_loader(model, make_loader(bundle, data_split, train=False, batch_size=500, device=dev), dev)
    out = Path(out_dir) if out_dir else new_run_dir(project, f"embed-{Path(str(ckpt)).parent.name or 'model'}")
    out.mkdir(parents=True, exist_ok=True)
    save_file({"features": feats.contiguous(), "labels": labels.contiguous()}, str(out / "embeddings.safetensors"),
              metadata={"classes": json.dumps(bundle.classes), "ids": json.dumps(data_split.ids)})
    x, y = feats.numpy(), labels.numpy()
    plot_embedding(PCA(n_components=2, random_state=seed).fit_transform(x), y, bundle.classes, out / "pca.png",
                   f"PCA of {len(x)} {split} embeddings ({x.shape[1]}-d)")
    if len(x) < 5:
        raise ImgclsError(f"only {len(x)} images in the {split} split: too few for a map")
    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    plot_embedding(tsne, y, bundle.classes, out / "tsne.png", f"t-SNE of {len(x)} {split} embeddings")
    return out


# ------------------------------------------------------------------ search


@dataclass
class SearchIndex:
    paths: list[str]
    features: torch.Tensor  # (N, D), L2-normalized
    path: Path  # where it is saved


def _fingerprint(files: list[str], ckpt: str | os.PathLike) -> str:
    h = hashlib.sha256()
    st = os.stat(ckpt)
    h.update(f"{Path(ckpt).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    for f in files:
        s = os.stat(f)
        h.update(f"{f}|{s.st_size}|{s.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def build_index(predictor, folder: str | os.PathLike, ckpt: str | os.PathLike, *, index_path: Path | None = None,
                batch_size: int = 64) -> SearchIndex:
    """Embeddings of every image in `folder` (recursively), saved in the cache and reused while nothing changes.

    The index lives in $IMGCLS_CACHE (else ~/.cache/imgcls)/search/, named by a fingerprint of the
    folder, its files and the model file: the user's image folder is never written to.
    """
    from imgcls.data.cache import default_cache_dir

    folder = Path(folder)
    if not folder.is_dir():
        raise ImgclsError(f"index must be a folder of images, got {folder}")
    files = [str(p) for p in predictor._expand(folder)]
    if not files:
        raise ImgclsError(f"no images in {folder}")
    fp = _fingerprint(files, ckpt)
    index_path = index_path or default_cache_dir(None) / "search" / f"{fp}.safetensors"
    index_path.parent.mkdir(parents=True, exist_ok=True)
    if index_path.is_file():
        from safetensors import safe_open

        with safe_open(str(index_path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("fingerprint") == fp:
            return SearchIndex(paths=json.loads(meta["paths"]), features=load_file(str(index_path))["features"],
                               path=index_path)
    feats, kept = [], []
    bar = progress_bar(desc="search: indexing", total=len(files), unit="img")
    for i in range(0, len(files), batch_size):
        bar.update(min(batch_size, len(files) - i))
        images, ok = [], []
        for f in files[i:i + batch_size]:
            try:
                images.append(predictor._to_pil(f))
                ok.append(f)
            except ImgclsError:
                continue  # unreadable files are left out of the index
        if images:
            x = torch.stack([predictor.transform(im) for im in images]).to(predictor.device)
            feats.append(embed_batch(predictor.model, x))
            kept += ok
    bar.close()
    features = torch.nn.functional.normalize(torch.cat(feats), dim=1)
    save_file({"features": features.contiguous()}, str(index_path), metadata={"fingerprint": fp, "paths": json.dumps(kept)})
    return SearchIndex(paths=kept, features=features, path=index_path)


def search(ckpt: str | os.PathLike, index: str | os.PathLike, query, *, k: int = 8,
           out_dir: str | os.PathLike | None = None, project: str = "runs", device: str = "auto"):
    """The k images of the `index` folder most similar to `query` (cosine similarity of embeddings) and a grid PNG."""
    from imgcls.evaluation.plots import plot_image_grid
    from imgcls.predict import Predictor
    from imgcls.run_dir import new_run_dir

    if k < 1:
        raise ImgclsError(f"k must be at least 1, got {k}")
    p = Predictor.load(ckpt, device=device)
    require_classifier(p.task, "imgcls search (a classifier's embeddings)")
    q_img = p._to_pil(query)  # a bad query fails before a long indexing
    idx = build_index(p, index, ckpt)
    q = torch.nn.functional.normalize(embed_batch(p.model, p.transform(q_img)[None].to(p.device)), dim=1)
    sims = (idx.features @ q[0]).tolist()
    order = np.argsort(-np.array(sims), kind="stable")[:k]
    results = [{"path": idx.paths[i], "similarity": float(sims[i])} for i in order]
    out = Path(out_dir) if out_dir else new_run_dir(project, "search")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"query": str(query), "index": str(idx.path), "results": results}, indent=2))
    thumbs = [np.asarray(_thumb(q_img))] + [np.asarray(_thumb(p._to_pil(r["path"]))) for r in results]
    plot_image_grid(thumbs, ["query"] + [f"{Path(r['path']).name}\n{r['similarity']:.3f}" for r in results],
                    out / "search.png", cols=min(k + 1, 9))
    return out, results


def _thumb(img, side: int = 128):
    img = img.copy()
    img.thumbnail((side, side))
    return img
