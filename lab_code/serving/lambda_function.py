"""AWS Lambda's entry point: `CMD ["lab_code.serving.lambda_function.handler"]` in
docker/lambda.Dockerfile.

Importing it loads the model, warms it up and builds the app: in Lambda that is the init phase of
a cold start, which is meant for it, so warm requests reuse the loaded model. Everything else
(the app, its limits, Mangum) lives in lab_code.serving.serverless, which does nothing at import.
The model is the bundled ONNX file, run by onnxruntime: the image holds no torch, and its init
imports none (lesson 07 measures what that saves); $MODEL_PATH may name another .onnx or .pt.
"""

from __future__ import annotations

from lab_code.threads import limit_children

# This module is the process's entry point, not a library: before numpy (and torch, if a .pt is
# served) load, one thread each for OpenMP and OpenBLAS (unless the function's environment says
# otherwise). The model runs on the app's model thread (lab_code.serving.worker), not on this
# one: onnxruntime's session keeps its one thread whichever thread calls it, and for TorchScript
# load_recognizer sets torch's count on each thread that calls the model.
THREADS = 1  # deploy/template.yaml gives the function one vCPU (1,769 MB) for this one thread
limit_children(THREADS)

from lab_code.serving import serverless  # noqa: E402 - after the thread settings, on purpose
from lab_code.serving.lambda_adapter import make_handler  # noqa: E402
from lab_code.serving.watch import lambda_watch  # noqa: E402

# $MODEL_PATH (the image's model/), else the bundled model; checked against the manifest beside it
# and $EXPECTED_MODEL_VERSION before it loads, so a wrong model fails the init, never a request
RECOGNIZER = serverless.load_recognizer()
serverless.warm_up(RECOGNIZER, scored=True)  # the watched path reads confidences too
# metrics as CloudWatch EMF lines on stdout; a prediction log only where $WATCH_DB names one
app = serverless.create_app(RECOGNIZER, watch=lambda_watch())
handler = make_handler(app)
MODEL_VERSION = app.state.worker().version  # first 12 hex digits of the model file's SHA-256
