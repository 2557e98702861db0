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
from predictors.backends import choose_backend, load_model_config


def write_reference(folder: Path, known_outputs: dict[str, tuple[list[str], dict[str, Any]]] | None = None) -> Path:
    """The folder's model (as served: same backend choice, codec and chunking) on its reference texts,
    written to models/<name>/drift_reference.json. A build step; returns the file's path.

    `known_outputs` holds, by file name, outputs the build already has (the export gate's run of each
    installed file on its sample, as served): when the served file's run covered exactly the reference
    texts, those outputs are used instead of running the texts again (the held-out set of a
    fine-tuned classifier: 11-23 s of a cold build on a 2-core machine without bf16)."""
    folder = Path(folder)
    config = load_model_config(folder)
    texts, source = reference_texts(config)
    model = TextPredictor(config, thread_counts=(1,))
    served = choose_backend(config).weights.name
    known = (known_outputs or {}).get(served)
    if known is not None and known[0] == texts:
        outputs = {name: list(values) for name, values in known[1].items()}
        return _write(folder, config, model, outputs, f"{source}, outputs of the export gate's run of {served}", len(texts))
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
    return _write(folder, config, model, outputs, source, len(texts))


def _write(folder: Path, config: Any, model: TextPredictor, outputs: dict[str, list], source: str, texts: int) -> Path:
    reference = build_reference(config, model.head, {k: np.asarray(v) if k != "entities" else v for k, v in outputs.items()},
                                source, texts)
    path = folder / DRIFT_REFERENCE_FILE
    path.write_text(json.dumps(reference.to_json(), indent=1) + "\n")
    return path


async def _predict(model: Any, request: Any) -> Any:
    return await model.predict(await model.preprocess(request))
