"""The drift reference a build records: the folder's model, as served, on its reference texts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
from kserve.protocol.infer_type import InferInput, InferRequest

from predictors.model import DRIFT_REFERENCE_FILE
from predictors.serving import codec
from predictors.serving.observability.drift import build_reference, reference_texts
from predictors.serving.predictor import TextPredictor
from predictors.backends import load_model_config


def write_reference(folder: Path) -> Path:
    """Run the folder's model (as served: same backend choice, codec and chunking) on its reference
    texts and write models/<name>/drift_reference.json. A build step; returns the file's path."""
    folder = Path(folder)
    config = load_model_config(folder)
    texts, source = reference_texts(config)
    model = TextPredictor(config, thread_counts=(1,))
    model.load()
    outputs: dict[str, list] = {}
    step = max(1, min(config.max_batch, 256))
    try:
        for start in range(0, len(texts), step):
            part = texts[start : start + step]
            request = InferRequest(
                model_name=model.name,
                infer_inputs=[InferInput(codec.INPUT_NAME, [len(part)], codec.INPUT_DATATYPE, part)],
                request_id="drift-reference",
            )
            predictions = asyncio.run(_predict(model, request))
            for name, values in predictions.outputs.items():
                outputs.setdefault(name, []).extend(list(values))
    finally:
        model.stop()
    reference = build_reference(config, model.head, {k: np.asarray(v) if k != "entities" else v for k, v in outputs.items()},
                                source, len(texts))
    path = folder / DRIFT_REFERENCE_FILE
    path.write_text(json.dumps(reference.to_json(), indent=1) + "\n")
    return path


async def _predict(model: Any, request: Any) -> Any:
    return await model.predict(await model.preprocess(request))
