"""The model-folder contract (no ML imports): file names, `predictor.yaml` settings, `ModelConfig`
and discovery, and the export gate report the backend choice reads."""

from .build_status import BUILD_STATUS_FILE, BuildStatus, clear_build_status, read_build_status, write_build_status
from .cleaning import TextCleaner
from .config import (
    ModelConfig, ModelConfigError, TaskTraits, discover_models, infer_task, is_model_folder, load_model_config, remote_models,
    remote_source,
)
from .files import (
    BUILD_INFO_FILE,
    CONFIG_FILE,
    DRIFT_REFERENCE_FILE,
    HELDOUT_FILE,
    HF_WEIGHTS_FILES,
    LIBRARIES,
    ONNX_FILES,
    PICKLE_SUFFIXES,
    PREDICTOR_FILE,
    REPORT_FILE,
    SKOPS_FILE,
    file_sha256,
    library_versions,
)
from .report import GateStatus, gate_status, read_report, write_report
from .versions import ModelNameError, check_model_name, folder_fingerprint, select_versions, version_folders
from .settings import (
    VersionPolicy, DeploySection, ModelSettingsError, PredictionLogSection, PredictorSettings, PreprocessSection, read_settings,
)
from .storage_uri import StorageUri, StorageUriError, parse_storage_uri

__all__ = [
    "ModelNameError", "VersionPolicy", "check_model_name", "folder_fingerprint", "select_versions", "version_folders",
    "BUILD_STATUS_FILE", "BuildStatus", "clear_build_status", "read_build_status", "write_build_status",
    "BUILD_INFO_FILE", "CONFIG_FILE", "DRIFT_REFERENCE_FILE", "DeploySection", "GateStatus",
    "HELDOUT_FILE", "HF_WEIGHTS_FILES", "LIBRARIES", "ModelConfig", "ModelConfigError", "ModelSettingsError",
    "ONNX_FILES", "PICKLE_SUFFIXES", "PREDICTOR_FILE", "PredictionLogSection", "PredictorSettings", "PreprocessSection",
    "REPORT_FILE", "SKOPS_FILE", "TaskTraits", "TextCleaner", "discover_models",
    "file_sha256", "gate_status", "infer_task", "is_model_folder", "library_versions", "load_model_config",
    "read_report", "read_settings", "write_report", "remote_models", "remote_source", "StorageUri", "StorageUriError",
    "parse_storage_uri",
]
