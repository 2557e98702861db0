"""A TF-IDF + logistic-regression text classifier: trained in seconds on the cleaned training texts.

The texts are cleaned with the model's own `preprocess:` (predictors.model.cleaning, read from the
repository's predictor.yaml), the one function the server applies at inference and the export gate
runs through, so training and serving see the same texts. The cleaning lower-cases, replaces
URLs, e-mails and numbers by tokens, removes punctuation and collapses whitespace; the vectorizer
then splits on spaces (`token_pattern` `\\S+`) and lower-cases nothing itself, which is also what
its ONNX conversion does exactly (no StringNormalizer, the same tokens).

Every choice that changes the fitted pipeline is a field of TfidfSettings, part of the folder's
cache key (recipes.py). Why these values (5-fold cross-validation on the training split only):
docs/build.md.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from .data import TextData


@dataclass(frozen=True)
class TfidfSettings:
    """Everything that changes the fitted pipeline."""

    ngram_range: tuple[int, int] = (1, 2)
    min_df: int = 2
    sublinear_tf: bool = False  # True is what skl2onnx converts wrongly (log(1 + tf)); see sklearn_onnx.py
    token_pattern: str = r"\S+"  # the cleaned texts are words separated by single spaces
    C: float = 16.0
    solver: str = "liblinear"

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "vectorizer": "sklearn.feature_extraction.text.TfidfVectorizer(lowercase=False)",
                "classifier": "sklearn.linear_model.LogisticRegression"}


@dataclass
class FitResult:
    pipeline: Any
    seconds: float


def fit_tfidf(data: TextData, settings: TfidfSettings, clean: Callable[[str], str]) -> FitResult:
    """Fit the pipeline on the cleaned training texts (deterministic: liblinear on fixed data)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    started = time.monotonic()
    pipeline = Pipeline([
        ("tfidf", TfidfVectorizer(ngram_range=settings.ngram_range, min_df=settings.min_df,
                                  sublinear_tf=settings.sublinear_tf, token_pattern=settings.token_pattern,
                                  lowercase=False)),
        ("classifier", LogisticRegression(C=settings.C, solver=settings.solver)),
    ])
    pipeline.fit([clean(text) for text in data.train_texts], data.train_labels)
    return FitResult(pipeline, time.monotonic() - started)
