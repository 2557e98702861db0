"""Models fetched from a storage URI: who may fetch what (access.py), the download itself with
KServe's storage library in a child process (download.py), and the cache folder the downloads are
renamed into once complete (cache.py).

Import the submodules directly: download.py runs as its own process (`python -m
predictors.serving.storage.download`) and must not pull in the server (kserve, grpc) through here.
"""
