# syntax=docker/dockerfile:1
# The serverless backend: the model behind an AWS Lambda handler, in AWS's Python base image.
# Lean on purpose: the model runs as its ONNX file on onnxruntime, so the image has no torch
# (about 200 MB of packages instead of about 980 MB; `python -m lab_code.dockerfile
# docker/lambda.Dockerfile --size` estimates it) and a cold start does not import it.
# Build it from the repository root, which is the build context (see docker/README.md):
#   docker build -f docker/lambda.Dockerfile -t text-recognizer-lambda .
#   docker run --rm -p 9000:8080 text-recognizer-lambda
# The base image brings the Lambda runtime interface client and sets LAMBDA_TASK_ROOT
# (/var/task): the function's code and its dependencies go there.
FROM public.ecr.aws/lambda/python:3.12

# Dependencies first, from their own file: a code change never reinstalls them.
COPY docker/requirements-lambda.txt ${LAMBDA_TASK_ROOT}/requirements.txt
RUN pip install --no-cache-dir -r "${LAMBDA_TASK_ROOT}/requirements.txt" --target "${LAMBDA_TASK_ROOT}"

# The model the function serves, with the manifest that says which version it is: the bundled
# ONNX file by default, or a registry version's, fetched into build/release-model
# (deploy/README.md): docker build --build-arg MODEL_DIR=build/release-model ...
# At start the function checks the file against its manifest, and against the version the
# deployment names ($EXPECTED_MODEL_VERSION), before it answers anything.
ARG MODEL_DIR=lab_code/artifacts
COPY ${MODEL_DIR}/text_recognizer.onnx ${MODEL_DIR}/manifest.json ${LAMBDA_TASK_ROOT}/model/
ENV MODEL_PATH=${LAMBDA_TASK_ROOT}/model/text_recognizer.onnx

# The package itself (code and bundled model files) last: it changes most often.
COPY lab_code/ ${LAMBDA_TASK_ROOT}/lab_code/
# Its bytecode, compiled once here. Lambda's copy of the image is read-only (only /tmp is
# writable), so Python cannot cache the bytecode it compiles on import: without this step every
# cold start compiles lab_code again (pip already compiled the dependencies it installed).
# checked-hash: each .pyc records its source's hash, not its time, so a rebuilt or re-timed file
# is never read from a stale .pyc.
RUN python -m compileall -q --invalidation-mode checked-hash "${LAMBDA_TASK_ROOT}/lab_code"

# Not a command: the runtime imports lab_code.serving.lambda_function once (the init phase of a cold
# start: the model is loaded there) and then calls its `handler(event, context)` for every request.
CMD ["lab_code.serving.lambda_function.handler"]
