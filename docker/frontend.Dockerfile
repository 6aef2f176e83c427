# syntax=docker/dockerfile:1
# The Gradio frontend: the web UI and the bundled model in one CPU image.
# Build it from the repository root, which is the build context (see docker/README.md):
#   docker build -f docker/frontend.Dockerfile -t text-recognizer-frontend .
#   docker run --rm -p 7860:7860 text-recognizer-frontend
# Layers are ordered from the slowest-changing (base image, settings, dependencies) to the
# fastest-changing (our code), so editing lab_code/ rebuilds only the last layers.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False

# The app runs as this user, not as root.
RUN useradd --create-home --no-log-init --uid 10001 app

WORKDIR /app

# Dependencies first, from their own file: a code change never reinstalls torch.
COPY docker/requirements-frontend.txt requirements.txt
RUN pip install --no-cache-dir -r requirements.txt

# The package itself (code and bundled model) last: it changes most often. Copied, not
# pip-installed, so nothing from pyproject.toml's training dependencies comes along.
COPY lab_code/ lab_code/

# A numeric id, so that orchestrators can check it is not root without reading /etc/passwd.
USER 10001
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=4)"]
ENTRYPOINT ["python", "-m", "lab_code.serving", "app", "--host", "0.0.0.0"]
CMD ["--port", "7860"]
