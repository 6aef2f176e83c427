"""AWS Lambda's entry point: `CMD ["lab_code.serving.lambda_function.handler"]` in
docker/lambda.Dockerfile.

Importing it loads the model, warms it up and builds the app: in Lambda that is the init phase of
a cold start, which is meant for it, so warm requests reuse the loaded model. Everything else
(the app, its limits, Mangum) lives in lab_code.serving.serverless, which does nothing at import.
"""

from __future__ import annotations

from lab_code.threads import limit_children

# This module is the process's entry point, not a library: before torch and numpy load, one
# thread each for OpenMP and OpenBLAS (unless the function's environment says otherwise). The
# model runs on Mangum's helper thread, which load_recognizer's per-thread setting covers too.
THREADS = 1  # deploy/template.yaml gives the function one vCPU (1,769 MB) for this one thread
limit_children(THREADS)

from lab_code.serving import serverless  # noqa: E402 - after the thread settings, on purpose
from lab_code.serving.lambda_adapter import make_handler  # noqa: E402

# $MODEL_PATH (the image's model/), else the bundled model; checked against the manifest beside it
# and $EXPECTED_MODEL_VERSION before it loads, so a wrong model fails the init, never a request
RECOGNIZER = serverless.load_recognizer()
serverless.warm_up(RECOGNIZER)
app = serverless.create_app(RECOGNIZER)
handler = make_handler(app)
MODEL_VERSION = app.state.worker().version  # first 12 hex digits of the model file's SHA-256
