"""ONNX Runtime: the CUDA execution provider when this build has one and a GPU is there, else the CPU.

A graph takes token ids (a transformer export) or texts: a scikit-learn pipeline converted by
skl2onnx has one string input and featurizes the texts itself (its TfIdfVectorizer operator); the
backend then takes the cleaned texts (`takes_texts`) and no tokenizer is loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort

from ..model import REPORT_FILE, ModelConfig, gate_status
from ..tasks import TaskHead
from .base import RANK_GATED, RANK_UNGATED, Backend, BackendChoice, Candidates
from .cpus import wide_run_helper_cpus
from .devices import DeviceChoice, onnx_providers


class OnnxBackend(Backend):
    name = "onnx"
    platform = "onnxruntime_onnx"
    files = "no .onnx file"

    @classmethod
    def device(cls) -> DeviceChoice:
        return onnx_providers(ort.get_available_providers())[1]

    @classmethod
    def candidates(cls, config: ModelConfig, forced: bool = False) -> Candidates:
        """The folder's ONNX files: int8 before fp32. A file written by `python -m predictors export`
        is served only if export_report.json records that it passed its accuracy gate, or that the
        user installed it with --force despite a failed gate (the reason then says so). Files the
        report does not cover (no report, or put there by hand) keep the plain rule: present means
        servable, after the gated ones."""
        files = config.onnx_candidates()
        if forced:
            if not files:
                return Candidates([], [])
            status = gate_status(config.path, files[0])
            note = f"; {status.precision} gate {status.state}: {status.summary}" if status else ""
            return Candidates([BackendChoice(cls.name, files[0], f"forced by predictor.yaml{note}", rank=RANK_GATED)], [])
        servable: list[BackendChoice] = []
        refused: list[str] = []
        for path in files:
            status = gate_status(config.path, path)
            if status is None:
                servable.append(BackendChoice(cls.name, path, f"{path.name} present (no accuracy gate recorded)", rank=RANK_UNGATED))
            elif status.state == "passed":
                servable.append(BackendChoice(
                    cls.name, path, f"{path.name} passed the {status.precision} accuracy gate: {status.summary}", rank=RANK_GATED))
            elif status.state == "forced":
                servable.append(BackendChoice(
                    cls.name, path,
                    f"{path.name} FAILED its {status.precision} accuracy gate ({status.summary}); "
                    "served only because it was installed with --force",
                    rank=RANK_GATED,
                ))
            elif status.state == "stale":
                servable.append(BackendChoice(
                    cls.name, path, f"{path.name} present ({status.summary}; gate not re-run)", rank=RANK_UNGATED))
            elif status.state == "other-weights":
                refused.append(f"{path.name} was {status.summary} (see {REPORT_FILE})")
            else:
                refused.append(f"{path.name} failed its {status.precision} accuracy gate ({status.summary}; see {REPORT_FILE})")
        return Candidates(servable, refused)

    def __init__(self, config: ModelConfig, head: TaskHead, weights: Path, threads: tuple[int, ...] = (1,)) -> None:
        super().__init__(config, head, weights, threads)
        providers, self.device_choice = onnx_providers(ort.get_available_providers())
        # A session's intra-op thread count is fixed when it is made, so there is one session per
        # count: one thread per run while every worker is busy (two one-thread runs outpace one
        # two-thread run for these models), all CPUs for a batch that runs alone.
        # Their weights are loaded once and handed to every session (SessionOptions.add_initializer):
        # a second session otherwise copies all of them. Measured on review-sentiment's int8 graph
        # (docs/performance.md): both sessions 147 MiB shared against 184 MiB apart, at the same speed.
        shared = shared_initializers(weights) if len(threads) > 1 else []
        helper_cpus = wide_run_helper_cpus(max(threads))
        self.pins_wide_helpers = helper_cpus is not None
        self.sessions = {count: self._session(providers, count, shared, helper_cpus) for count in threads}
        self._shared_weights = shared  # ORT does not own them: they live as long as the sessions
        self.session = self.sessions[min(threads)]
        inputs = self.session.get_inputs()
        self._inputs = tuple(i.name for i in inputs)
        outputs = [o.name for o in self.session.get_outputs()]
        self._output = head.backend_output if head.backend_output in outputs else outputs[0]
        self.takes_texts = len(inputs) == 1 and inputs[0].type == STRING_TENSOR
        self.per_text = quantizes_activations(weights)

    def _session(self, providers: list[str], threads: int, shared: list[tuple[str, ort.OrtValue]],
                 helper_cpus: list[int] | None = None) -> ort.InferenceSession:
        return ort.InferenceSession(str(self.weights), session_options(threads, shared, helper_cpus), providers=providers)

    @property
    def input_names(self) -> tuple[str, ...]:
        return () if self.takes_texts else self._inputs

    def run_texts(self, texts: list[str], threads: int = 1) -> np.ndarray:
        """A converted pipeline's logits for the cleaned texts (its input is [n, 1] strings)."""
        column = np.array(texts, dtype=object).reshape(-1, 1)
        return self.sessions.get(threads, self.session).run([self._output], {self._inputs[0]: column})[0]

    def run(self, arrays: dict[str, np.ndarray], threads: int = 1) -> np.ndarray:
        session = self.sessions.get(threads, self.session)
        if self.per_text:
            return self._run_per_text(arrays, session)
        feeds = {name: arrays[name] for name in self._inputs}
        return session.run([self._output], feeds)[0]

    def _run_per_text(self, arrays: dict[str, np.ndarray], session: ort.InferenceSession) -> np.ndarray:
        """Dynamic int8 picks one activation scale per tensor, i.e. per batch, so a batched text's
        output would depend on its neighbours. Each text runs alone, unpadded; on one thread per
        run this is no slower than batching (padding costs what batching saves)."""
        lengths = arrays["attention_mask"].sum(axis=1)
        rows = [
            session.run([self._output], {k: arrays[k][i : i + 1, : int(n)] for k in self._inputs})[0]
            for i, n in enumerate(lengths)
        ]
        if rows[0].ndim == 2:  # [1, C]: one vector per text
            return np.concatenate(rows)
        result = np.zeros((len(rows), arrays["input_ids"].shape[1], *rows[0].shape[2:]), dtype=rows[0].dtype)
        for i, row in enumerate(rows):  # token-level outputs padded back; heads mask padding out
            result[i, : row.shape[1]] = row[0]
        return result


def session_options(threads: int, shared: list[tuple[str, ort.OrtValue]] = (),
                    helper_cpus: list[int] | None = None) -> ort.SessionOptions:
    """Options of a session running on `threads` intra-op threads, its weights from `shared`; with
    `helper_cpus` (one per helper thread), each helper pinned to its CPU."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for name, value in shared:
        options.add_initializer(name, value)
    if threads > 1 and helper_cpus and len(helper_cpus) == threads - 1:
        # One helper on each CPU but the first, where the run's own thread goes: they spin between
        # operators (ORT's default; a wake-up per operator costs 1-2 ms a run otherwise) without
        # sharing the run's CPU, and stop spinning when the run ends, so the event loop and the
        # next run find the CPUs free (spinning on, the loop woke 2.5 ms late after each run).
        affinities = ";".join(str(cpu + 1) for cpu in helper_cpus)  # ORT counts processors from 1
        options.add_session_config_entry("session.intra_op_thread_affinities", affinities)
        options.add_session_config_entry("session.force_spinning_stop", "1")
    elif threads > 1:
        # Unpinned, the helper threads sleep between runs instead of spinning: spinning, one of
        # them kept a CPU busy between a lone client's requests and, sharing a CPU with the next
        # run's thread, doubled its latency (22 ms against 12 at 1 client, docs/performance.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


#: onnxruntime's type of a string input: a graph that takes texts rather than token ids.
STRING_TENSOR = "tensor(string)"
#: Operators whose activation scale is computed from the whole input tensor at run time.
DYNAMIC_QUANT_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention"})
#: Operators only a quantized graph has: how a file's precision (int8 or fp32) is read from its graph.
QUANTIZED_OPS = DYNAMIC_QUANT_OPS | {
    "MatMulInteger", "QLinearMatMul", "QEmbedLayerNormalization", "MatMulNBits", "QGemm",
}


def graph_op_types(path: Path) -> set[str]:
    """The operator types in an ONNX file's graph (weights are not loaded)."""
    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


def shared_initializers(path: Path) -> list[tuple[str, ort.OrtValue]]:
    """The graph's weights as CPU values that several sessions can use without copying them (the
    sessions keep them alive: ORT holds no copy, so the caller keeps this list)."""
    graph = onnx.load(str(path)).graph
    return [(tensor.name, ort.OrtValue.ortvalue_from_numpy(onnx.numpy_helper.to_array(tensor)))
            for tensor in graph.initializer]


def quantizes_activations(path: Path) -> bool:
    return bool(graph_op_types(path) & DYNAMIC_QUANT_OPS)


def is_quantized(path: Path) -> bool:
    return bool(graph_op_types(path) & QUANTIZED_OPS)
