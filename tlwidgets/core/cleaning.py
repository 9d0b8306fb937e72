"""Finding images to look at again: likely wrong labels, near-duplicates, and images whose
nearest neighbours carry another label.

:func:`review` scores every image of the session's data by the loss of its given label:

* **validation images** get the trained model's own loss;
* **training images** get out-of-fold losses when the layers before the head are frozen:
  the frozen features (cached by the last fit, see :meth:`FeatureCache.stored`) are split
  into ``folds`` parts, a logistic regression is fit on all parts but one and predicts the
  held-out part, so no image is scored by a model that saw its label (cleanlab's
  ``estimate_cv_predicted_probabilities`` works the same way). When nothing before the head
  is frozen there are no such features, and training images get the model's own loss; the
  report says so (:attr:`CleaningReport.notes`).

The same features, averaged over their spatial positions, give the **near-duplicates**
(cosine similarity at least ``duplicate_threshold``, across classes and across the
train/validation split) and the **label disagreements** (images whose ``neighbours``
nearest images mostly carry one other label, which is then suggested).

Nothing here changes a file: :mod:`tlwidgets.core.cleaning_apply` acts on a change plan.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from .cleaning_apply import (
    ChangePlan,
    apply_plan,
    last_applied,
    preview_plan,
    undo_last,
)
from .data import ImageDataset
from .device import autocast_dtype
from .errors import ConfigError, DataError, ModelError
from .evaluation import eval_mode, logits_of
from .loading import read_batches
from .similar import disagreements as find_disagreements
from .similar import pairs_frame, pool, similar

if TYPE_CHECKING:
    from .session import Session

__all__ = [
    "DUPLICATE_THRESHOLD", "FOLDS", "NEIGHBOURS", "ChangePlan", "CleaningReport", "apply_plan",
    "last_applied", "preview_plan", "review", "undo_last",
]

#: Cosine similarity of pooled features from which two images count as near-duplicates.
#: Measured by ``benchmarks/bench_duplicates.py`` on EfficientNet-Lite0's pooled ImageNet
#: features of the 300 flower photos (about 240x160 pixels): a byte copy, a PNG and a JPEG
#: re-save at quality 95 score at least 0.975 against the original, a 10 % brighter copy 0.96-1.00
#: (median 0.99), while the most similar two different photos score 0.91 and 99 % of the photos
#: have no other above 0.88. Heavier changes score lower (quality 70, shrunk to 80 %, 5 %
#: cropped: medians 0.95; mirrored 0.97), so 0.93 finds most of those too, with less room
#: above the look-alikes of a larger set; 0.97 lists copies and no look-alike there.
DUPLICATE_THRESHOLD = 0.97
#: Nearest neighbours asked about each image's label.
NEIGHBOURS = 10
#: Folds of the out-of-fold scores.
FOLDS = 5
#: Most near-duplicate pairs one report lists (the most similar first).
MAX_PAIRS = 10_000
Progress = Callable[[int, int, str], None]

SCORE_COLUMNS = ("path", "split", "label", "predicted", "loss", "p_label", "confidence", "scored_by")


@dataclass
class CleaningReport:
    """What :func:`review` found.

    Attributes:
        classes: class names, in label order.
        scores: one row per image, highest loss first: path, split (``train``/``val``),
            label (the given class), predicted (the most likely class), loss (cross-entropy
            of the given label), p_label (its probability), confidence (the predicted
            class's probability), scored_by (``out-of-fold`` or ``model``).
        duplicates: near-duplicate pairs, most similar first: both paths, labels and splits,
            similarity (cosine), same_label, crosses_split.
        disagreements: images whose nearest neighbours mostly carry another label: path,
            split, label, suggested (the neighbours' label), agreement (their share), loss.
        scored_by: how training images were scored: ``"out-of-fold"`` or ``"model"``.
        features: where the features came from, in words.
        threshold: the near-duplicate threshold used.
        neighbours: how many neighbours were asked.
        notes: what people should know about these scores.
        data_version: the session's ``data_version`` the report belongs to.
    """

    classes: list[str]
    scores: pd.DataFrame
    duplicates: pd.DataFrame
    disagreements: pd.DataFrame
    scored_by: str
    features: str
    threshold: float
    neighbours: int
    notes: list[str] = field(default_factory=list)
    data_version: int = 0

    def by_loss(self, cls: str | None = None, cell: tuple[str, str] | None = None) -> pd.DataFrame:
        """The scores, highest loss first, of one class (``cls``) or one confusion cell.

        Args:
            cls: keep images whose given label is this class.
            cell: ``(true, predicted)`` keeps images labelled ``true`` and predicted ``predicted``.

        Raises:
            DataError: naming an unknown class.
        """
        frame = self.scores
        if cls is not None:
            frame = frame[frame["label"] == self._known(cls)]
        if cell is not None:
            true, predicted = (self._known(c) for c in cell)
            frame = frame[(frame["label"] == true) & (frame["predicted"] == predicted)]
        return frame.reset_index(drop=True)

    def cells(self) -> pd.DataFrame:
        """Confusion cells with images whose predicted class is not their label: true, predicted, images."""
        wrong = self.scores[self.scores["label"] != self.scores["predicted"]]
        counts = wrong.groupby(["label", "predicted"]).size().rename("images").reset_index()
        counts = counts.rename(columns={"label": "true"})
        return counts.sort_values(["images", "true", "predicted"], ascending=[False, True, True]).reset_index(drop=True)

    def without(self, paths: Sequence[str]) -> CleaningReport:
        """This report without the rows that name any of ``paths`` (images already dealt with)."""
        gone = set(map(str, paths))
        dups = self.duplicates
        return replace(
            self,
            scores=self.scores[~self.scores["path"].isin(gone)].reset_index(drop=True),
            duplicates=dups[~(dups["path_a"].isin(gone) | dups["path_b"].isin(gone))].reset_index(drop=True),
            disagreements=self.disagreements[~self.disagreements["path"].isin(gone)].reset_index(drop=True),
        )

    def summary(self) -> str:
        """One paragraph: images scored, how, wrong predictions, duplicates and disagreements."""
        wrong = int((self.scores["label"] != self.scores["predicted"]).sum())
        crossing = int(self.duplicates["crosses_split"].sum()) if len(self.duplicates) else 0
        parts = [
            f"Scored {len(self.scores)} images ({self.features}); {wrong} are predicted as another class.",
            f"{len(self.duplicates)} near-duplicate pairs (cosine >= {self.threshold:g}), {crossing} across "
            + "the train/validation split.",
            f"{len(self.disagreements)} images whose {self.neighbours} nearest neighbours mostly carry another label.",
        ]
        return " ".join([*parts, *self.notes])

    def _known(self, name: str) -> str:
        if name not in self.classes:
            raise DataError(f"Unknown class {name!r}; the classes are {', '.join(self.classes)}.")
        return name


def _whole(value: Any, name: str, low: int, high: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ConfigError(f"{name}={value!r} must be a whole number from {low} to {high:,} ({hint}).")
    return int(value)


def _threshold(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not 0.0 < number <= 1.0:
        raise ConfigError(f"duplicate_threshold={value!r} must be a number above 0 and at most 1 "
                          f"(cosine similarity; {DUPLICATE_THRESHOLD} finds re-saved and slightly cropped copies).")
    return number


def review(
    session: Session,
    *,
    folds: int = FOLDS,
    duplicate_threshold: float = DUPLICATE_THRESHOLD,
    neighbours: int = NEIGHBOURS,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> CleaningReport:
    """Score every image of the session's data, and find near-duplicates and label disagreements.

    Args:
        session: a session with a model whose head predicts the data's classes (trained).
        folds: parts of the out-of-fold scores (2-20).
        duplicate_threshold: cosine similarity from which two images are near-duplicates.
        neighbours: nearest neighbours asked about each image's label (1-100).
        batch_size: images per pass when features have to be computed.
        progress: called with ``(done, total, what)``.

    Raises:
        ConfigError: a bad option. ModelError / DataError: no model, no data, or a head
            that does not predict the data's classes. BusyError: while training runs.
    """
    folds = _whole(folds, "folds", 2, 20, "5 is usual")
    duplicate_threshold = _threshold(duplicate_threshold)
    neighbours = _whole(neighbours, "neighbours", 1, 100, "10 is usual")
    batch_size = _whole(batch_size, "batch_size", 1, 4096, "32 is a good start")
    session.require_idle("look for label problems")
    bundle = session._require_data()
    session._require_model()
    missing = session.readiness(require_trainable=False)
    if missing is not None:
        raise ModelError(missing)
    samples = [*bundle.train, *bundle.val]
    if len(samples) < 2:
        raise DataError("The data holds fewer than two images: there is nothing to compare.")
    classes = list(bundle.classes)
    labels = np.asarray([s.label for s in samples], dtype=np.int64)
    n_train = len(bundle.train)
    notes: list[str] = []
    if session.history is None:
        notes.append("The model has not been trained in this session: train first, or its losses mean little.")

    got = _cached(session, batch_size)
    if got is None:
        got = one_pass(session, samples, batch_size, progress)
    logits, pooled, words, frozen = got
    probs = torch.softmax(logits.float(), dim=1).numpy()
    scored_by = "model"
    if frozen and n_train >= 2:
        if progress is not None:
            progress(0, 1, "out-of-fold scores")
        probs[:n_train] = out_of_fold(pooled[:n_train].numpy(), labels[:n_train], len(classes), folds)
        scored_by = "out-of-fold"
        notes.append(f"Training images: out-of-fold losses of {folds} logistic regressions on the frozen "
                     "features, each fit without the images it scores. Validation images: the model's loss.")
    else:
        notes.append("Training images: the model's own loss, since no frozen features were available (the layers "
                     "before the head were trained too). The model has seen these labels, so a wrong one may score "
                     "low: freeze the backbone and train again for out-of-fold scores.")
    scores = _scores(samples, n_train, labels, probs, classes, scored_by)
    if progress is not None:
        progress(0, 1, "similar images")
    pairs, nearest = similar(pooled, duplicate_threshold, neighbours)
    splits = np.asarray(["train"] * n_train + ["val"] * (len(samples) - n_train))
    paths = np.asarray([s.path for s in samples], dtype=object)
    if len(pairs) > MAX_PAIRS:
        notes.append(f"Only the {MAX_PAIRS:,} most similar of {len(pairs):,} near-duplicate pairs are listed.")
        pairs = pairs[:MAX_PAIRS]
    duplicates = pairs_frame(pairs, paths, labels, splits, classes)
    loss = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))
    disagreements = find_disagreements(nearest, paths, labels, splits, classes, loss)
    if progress is not None:
        progress(1, 1, "done")
    return CleaningReport(classes, scores, duplicates, disagreements, scored_by, words, duplicate_threshold,
                          int(nearest.shape[1]), notes, session.data_version)


# ---------------------------------------------------------------------------- features
def _cached(session: Session, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, str, bool] | None:
    """Logits and pooled features from the features the last fit cached; ``None`` when there are none.

    Cached features of augmented training images (several views) are not used: they are not
    the images as they are.
    """
    model = session.model
    train_ds, val_ds = session._datasets()
    stored = session.feature_cache.stored(model, train_ds, val_ds)
    if stored is None or stored.views != 1:
        return None
    device = torch.device(session.device)
    parts = [stored.train] + ([stored.val] if stored.val is not None else [])
    logits, pooled = [], []
    with eval_mode(model), eval_mode(stored.split.suffix_eval), torch.no_grad():
        for part in parts:
            for start in range(0, len(part), batch_size):
                x = part[start:start + batch_size].to(device).float()
                logits.append(logits_of(stored.split.suffix_eval(x)).float().cpu())
                pooled.append(pool(x).cpu())
    words = f"features of {sum(len(p) for p in parts)} images cached by the last fit, {stored.split.where}"
    return torch.cat(logits), torch.cat(pooled), words, True


def one_pass(session: Session, samples: list, batch_size: int = 32,
             progress: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor, str, bool]:
    """One pass of the session's model (eval mode, its evaluation transform) over ``samples``.

    Returns:
        ``(logits, pooled, words, frozen)``: the model's outputs, the pooled input of its head
        (N x 0 when the head is not called once per batch on one tensor), where they came
        from in words, and whether every layer before the head is frozen.
    """
    model = session.model
    head_path = session.head.path
    head = model.get_submodule(head_path)
    captured: list[torch.Tensor] = []

    def keep_input(_module: Any, args: tuple) -> None:
        if args and isinstance(args[0], torch.Tensor):
            captured.append(pool(args[0].detach()).cpu())

    bundle = session.data
    loader = read_batches(ImageDataset(samples, bundle.eval_tf), torch.arange(len(samples)).split(batch_size))
    device = torch.device(session.device)
    dtype = autocast_dtype(device, session.config.precision)
    logits = []
    handle = head.register_forward_pre_hook(keep_input)
    try:
        with eval_mode(model), torch.no_grad():
            for x, _ in loader:
                with torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
                    logits.append(logits_of(model(x.to(device))).float().cpu())
                if progress is not None:
                    progress(sum(len(b) for b in logits), len(samples), "features")
    finally:
        handle.remove()
    logits_t = torch.cat(logits)
    pooled = torch.cat(captured) if captured else torch.zeros(len(logits_t), 0)
    if len(pooled) != len(logits_t):  # the head ran more than once per batch: no usable features
        pooled = torch.zeros(len(logits_t), 0)
    frozen = all(not p.requires_grad for name, p in model.named_parameters()
                 if not (name == head_path or name.startswith(head_path + ".")))
    kind = "frozen" if frozen else "trained"
    return logits_t, pooled, f"one pass of the model over {len(samples)} images; {kind} head input", frozen


# ---------------------------------------------------------------------------- scores
def out_of_fold(features: np.ndarray, labels: np.ndarray, n_classes: int, folds: int = FOLDS,
                seed: int = 0) -> np.ndarray:
    """Class probabilities of each row from a logistic regression that never saw it.

    The rows are split into ``folds`` stratified parts; for each part a multinomial logistic
    regression (L2, ``C=1``) is fit on the others and predicts it. The features are scaled by
    one number, their root mean square over the fitting rows, so the regularisation means the
    same for any layer; standardising every feature on its own (to unit variance) was tried
    too and ranked planted wrong labels lower, as it lifts dimensions that are mostly noise.
    The Newton-CG solver converges in about ten steps where L-BFGS took a hundred or more
    (4 s instead of 51 s for 8,000 images of 1,280 features on two busy cores).
    Classes missing from a fold's training rows get probability 0 there (1e-6 after smoothing).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    n = len(labels)
    probs = np.zeros((n, n_classes), dtype=np.float64)
    k = max(2, min(int(folds), n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message="The least populated class")
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        for fit_rows, held in splitter.split(features, labels):
            seen = np.unique(labels[fit_rows])
            if len(seen) < 2:  # one class only: it is all a model could say
                probs[np.ix_(held, seen)] = 1.0
                continue
            scale = float(np.sqrt(np.mean(np.square(features[fit_rows], dtype=np.float64)))) or 1.0
            model = LogisticRegression(C=1.0, solver="newton-cg", max_iter=200)
            model.fit(features[fit_rows] / scale, labels[fit_rows])
            probs[np.ix_(held, model.classes_)] = model.predict_proba(features[held] / scale)
    probs = probs + 1e-6
    return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


def _scores(samples: list, n_train: int, labels: np.ndarray, probs: np.ndarray, classes: list[str],
            scored_by: str) -> pd.DataFrame:
    rows = np.arange(len(labels))
    p_label = probs[rows, labels]
    predicted = probs.argmax(axis=1)
    frame = pd.DataFrame({
        "path": [s.path for s in samples],
        "split": ["train"] * n_train + ["val"] * (len(samples) - n_train),
        "label": [classes[i] for i in labels],
        "predicted": [classes[i] for i in predicted],
        "loss": -np.log(np.clip(p_label, 1e-12, None)).astype(np.float64),
        "p_label": p_label.astype(np.float64),
        "confidence": probs[rows, predicted].astype(np.float64),
        "scored_by": [scored_by] * n_train + ["model"] * (len(samples) - n_train),
    }, columns=list(SCORE_COLUMNS))
    return frame.sort_values("loss", ascending=False, kind="stable").reset_index(drop=True)
