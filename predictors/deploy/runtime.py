"""Fixed facts of the serving runtime the manifests describe: the image, its command, ports,
where KServe puts the model, and the shutdown budget. The renderer, the merge emulation and the
local rehearsal read them from here; the validator does not (it checks what KServe requires)."""

from __future__ import annotations

from .. import __version__

RUNTIME_NAME = "predictors"
MODEL_FORMAT = "predictors"
MODEL_FORMAT_VERSION = "1"
CONTAINER_NAME = "kserve-container"  # the name KServe merges the InferenceService's model into
IMAGE = "predictors"
IMAGE_TAG = __version__
HTTP_PORT = 8080
GRPC_PORT = 8081
MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts storageUri
COMMAND = ["python", "-m", "predictors"]  # the Dockerfile's ENTRYPOINT, written out
RUN_AS_USER = 1000  # the Dockerfile's USER
PRESTOP_SECONDS = 5  # keep serving while the endpoints controller removes the pod
DRAIN_ENV = "PREDICTORS_DRAIN_SECONDS"  # how long the server may drain in-flight requests after SIGTERM
REPOSITORY_API_ENV = "PREDICTORS_REPOSITORY_API"  # read-only: the repository's load/unload routes answer 403
LOADING_ENV = "PREDICTORS_LOADING"  # how models without a `loading` of their own are loaded
MODEL_MEMORY_ENV = "PREDICTORS_MODEL_MEMORY"  # the models' memory budget (lowered to leave the server its share)
DEFAULT_DRAIN_SECONDS = 30  # what the server uses when DRAIN_ENV is unset (kserve.ModelServer's own)
PROMETHEUS_PATH = "/metrics"
