"""AWS Lambda's entry point: `CMD ["lab_code.lambda_function.handler"]` in docker/lambda.Dockerfile.

Importing it loads the model, warms it up and builds the app: in Lambda that is the init phase of
a cold start, which is meant for it, so warm requests reuse the loaded model. Everything else
(the app, its limits, Mangum) lives in lab_code.serverless, which does nothing at import.
"""

from __future__ import annotations

from lab_code import serverless

serverless.use_one_torch_thread()  # this module is the process's entry point, not a library
RECOGNIZER = serverless.load_recognizer()  # $MODEL_PATH, else the bundled model
serverless.warm_up(RECOGNIZER)
app = serverless.create_app(RECOGNIZER)
handler = serverless.make_handler(app)
MODEL_VERSION = app.state.worker().version  # first 12 hex digits of the model file's SHA-256
