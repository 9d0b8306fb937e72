"""Near-duplicates and nearest neighbours by cosine similarity of pooled image features.

Used by :func:`tlwidgets.core.cleaning.review`: the similarity matrix is computed in blocks of
rows, so memory grows with the number of images times the block, not with its square.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

_BLOCK = 1024  # rows of the similarity matrix computed at once
PAIR_COLUMNS = ("path_a", "label_a", "split_a", "path_b", "label_b", "split_b", "similarity",
                "same_label", "crosses_split")
DISAGREE_COLUMNS = ("path", "split", "label", "suggested", "agreement", "loss")


def pool(features: torch.Tensor) -> torch.Tensor:
    """One vector per image: the mean over spatial positions (N x C x H x W) or tokens (N x T x C)."""
    x = features.float()
    if x.dim() == 4:
        return x.mean(dim=(2, 3))
    if x.dim() == 3:
        return x.mean(dim=1)
    return x.reshape(len(x), -1)


def similar(pooled: torch.Tensor, threshold: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Near-duplicate pairs and nearest neighbours by cosine similarity of ``pooled`` (N x D).

    Returns:
        ``(pairs, nearest)``: pairs as rows ``(i, j, similarity)`` with ``i < j`` and
        similarity >= ``threshold``, most similar first; ``nearest[i]`` the indices of the
        ``min(k, N - 1)`` most similar other images (N x 0 without features).
    """
    n = len(pooled)
    k = max(0, min(int(k), n - 1))
    if pooled.numel() == 0 or pooled.shape[1] == 0 or n < 2:
        return np.zeros((0, 3)), np.zeros((n, 0), dtype=np.int64)
    z = F.normalize(pooled.float(), dim=1)
    found, nearest = [], []
    for start in range(0, n, _BLOCK):
        sims = z[start:start + _BLOCK] @ z.T
        rows = torch.arange(start, start + len(sims))
        sims[torch.arange(len(sims)), rows] = -2.0  # never one's own neighbour
        nearest.append(sims.topk(k, dim=1).indices if k else torch.zeros(len(sims), 0, dtype=torch.long))
        r, c = torch.nonzero((sims >= threshold) & (torch.arange(n)[None, :] > rows[:, None]), as_tuple=True)
        if len(r):
            found.append(torch.stack([(r + start).double(), c.double(), sims[r, c].double()], dim=1))
    pairs = torch.cat(found).numpy() if found else np.zeros((0, 3))
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -pairs[:, 2])) if len(pairs) else np.zeros(0, dtype=np.int64)
    return pairs[order], torch.cat(nearest).numpy()


def pairs_frame(pairs: np.ndarray, paths: np.ndarray, labels: np.ndarray, splits: np.ndarray,
                 classes: list[str]) -> pd.DataFrame:
    a, b = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    names = np.asarray(classes, dtype=object)
    return pd.DataFrame({
        "path_a": paths[a], "label_a": names[labels[a]], "split_a": splits[a],
        "path_b": paths[b], "label_b": names[labels[b]], "split_b": splits[b],
        "similarity": np.minimum(pairs[:, 2], 1.0), "same_label": labels[a] == labels[b],
        "crosses_split": splits[a] != splits[b],
    }, columns=list(PAIR_COLUMNS))


def disagreements(nearest: np.ndarray, paths: np.ndarray, labels: np.ndarray, splits: np.ndarray,
                   classes: list[str], loss: np.ndarray) -> pd.DataFrame:
    """Images whose neighbours' most common label is another one, carried by more than half of them."""
    rows = []
    k = nearest.shape[1]
    if k:
        theirs = labels[nearest]  # N x k
        counts = np.stack([(theirs == c).sum(axis=1) for c in range(len(classes))], axis=1)
        top = counts.argmax(axis=1)
        share = counts[np.arange(len(labels)), top] / k
        for i in np.nonzero((top != labels) & (share > 0.5))[0]:
            rows.append((paths[i], splits[i], classes[labels[i]], classes[top[i]], float(share[i]), float(loss[i])))
    frame = pd.DataFrame(rows, columns=list(DISAGREE_COLUMNS))
    return frame.sort_values(["agreement", "loss"], ascending=False, kind="stable").reset_index(drop=True)
