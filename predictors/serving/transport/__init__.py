"""Transport: the server shell (HTTP on uvicorn, gRPC on grpc.aio), routes, the V2 JSON fast path,
connection guards and body limits, error answers and request-id accounting. The top of serving/."""
