#!/usr/bin/env python3
"""Why review-sentiment-tfidf's settings (tools/build/tfidf.py): 5-fold cross-validation on the
fine-food *training* split only (the held-out split is not looked at), per setting, with the fit
time and vocabulary size. The texts are cleaned with the model's own preprocess: settings.

    python benchmarks/tfidf_choices.py [--folds 5]

Prints one row per setting; docs/build.md quotes the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from predictors.model import TextCleaner  # noqa: E402
from tools.build.cache import cache_root_dir  # noqa: E402
from tools.build.data import read_fine_foods  # noqa: E402
from tools.build.recipes import REVIEW_TFIDF, served_overrides  # noqa: E402
from tools.build.sources import Sources  # noqa: E402
from tools.build.tfidf import TfidfSettings  # noqa: E402

VARIANTS = {
    "chosen": {},
    "C=4": {"C": 4.0},
    "C=8": {"C": 8.0},
    "C=32": {"C": 32.0},
    "unigrams": {"ngram_range": (1, 1)},
    "1-3-grams": {"ngram_range": (1, 3)},
    "min_df=1": {"min_df": 1},
    "min_df=3": {"min_df": 3},
    "sublinear_tf": {"sublinear_tf": True},
}


def pipeline_for(settings: TfidfSettings):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline([
        ("tfidf", TfidfVectorizer(ngram_range=settings.ngram_range, min_df=settings.min_df,
                                  sublinear_tf=settings.sublinear_tf, token_pattern=settings.token_pattern,
                                  lowercase=False)),
        ("classifier", LogisticRegression(C=settings.C, solver=settings.solver)),
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from sklearn.model_selection import cross_val_score

    data_dir, _ = Sources(cache_root_dir()).modeldata()
    data = read_fine_foods(data_dir)
    cleaner = TextCleaner(served_overrides("review-sentiment-tfidf")["preprocess"])
    texts = [cleaner(t) for t in data.train_texts]
    print(f"{args.folds}-fold cross-validation on the {len(texts)} training reviews (held-out split unused)")
    print(f"{'setting':<14} {'cv accuracy':>12} {'sd':>6} {'fit s':>6} {'vocabulary':>10}")
    for name, change in VARIANTS.items():
        settings = dataclasses.replace(REVIEW_TFIDF, **change)
        scores = cross_val_score(pipeline_for(settings), texts, data.train_labels, cv=args.folds)
        started = time.perf_counter()
        fitted = pipeline_for(settings).fit(texts, data.train_labels)
        seconds = time.perf_counter() - started
        print(f"{name:<14} {scores.mean():>12.4f} {scores.std():>6.4f} {seconds:>6.2f} "
              f"{len(fitted.named_steps['tfidf'].vocabulary_):>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
