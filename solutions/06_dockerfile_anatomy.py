# %% [context]
import os
import tempfile
from pathlib import Path

import lab_code
from lab_code import dockerfile

ROOT = Path(lab_code.__file__).resolve().parents[1]  # the repository: the build context
os.chdir(ROOT)
FRONTEND, LAMBDA = Path("docker/frontend.Dockerfile"), Path("docker/lambda.Dockerfile")
BAD = """\
FROM python:3.12-slim
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir -r docker/requirements-frontend.txt
EXPOSE 7860
CMD ["python", "-m", "lab_code.serving", "app", "--host", "0.0.0.0"]
"""

# %% [exercise 1]
# The requirements file alone first, then the install, then the code: a code change now misses
# the cache only at the last COPY.
GOOD = """\
FROM python:3.12-slim
WORKDIR /app
COPY docker/requirements-frontend.txt requirements.txt
RUN pip install --no-cache-dir -r requirements.txt
COPY lab_code/ lab_code/
EXPOSE 7860
CMD ["python", "-m", "lab_code.serving", "app", "--host", "0.0.0.0"]
"""
bad_plan = dockerfile.rebuild_plan(dockerfile.parse_dockerfile(BAD), ["lab_code/serving/app.py"])
good_plan = dockerfile.rebuild_plan(dockerfile.parse_dockerfile(GOOD), ["lab_code/serving/app.py"])
print("BAD :", bad_plan.summary())
print("GOOD:", good_plan.summary())
assert len(good_plan.rebuilt_layers) < len(bad_plan.rebuilt_layers)
assert not any(step.instruction == "RUN" for step in good_plan.rebuilt)
# A change of the requirements still reinstalls them, as it must:
print(dockerfile.rebuild_plan(dockerfile.parse_dockerfile(GOOD),
                              ["docker/requirements-frontend.txt"]).summary())

# %% [exercise 2]
lambda_steps = dockerfile.read_dockerfile(LAMBDA)
print(dockerfile.table(lambda_steps))
# Steps: 1 FROM, 2 COPY requirements, 3 RUN pip install, 4 ARG MODEL_DIR, 5 COPY the model (the
# ONNX file and its manifest) to model/, 6 ENV MODEL_PATH, 7 COPY lab_code/, 8 RUN compileall
# (lab_code's bytecode), 9 CMD.
my_prediction = {
    # The model the function serves is copied at step 5 (from MODEL_DIR, lab_code/artifacts by
    # default): 5 and everything after it. (lab_code/ at step 7 holds a copy too.)
    "lab_code/artifacts/text_recognizer.onnx": [5, 6, 7, 8, 9],
    # Step 2 copies the requirements file; the install (3) sits on top of it, and so on.
    "docker/requirements-lambda.txt": [2, 3, 4, 5, 6, 7, 8, 9],
}
for path, predicted in my_prediction.items():
    plan = dockerfile.rebuild_plan(lambda_steps, [path])
    actual = [step.number for step in plan.rebuilt]
    print(f"{path}: predicted {predicted}, rebuilt {actual}")
    assert actual == predicted
# (b) takes minutes: step 3 downloads and installs onnxruntime and the rest again (about 200 MB).
# (a) copies 2 MB: seconds. That is the point of installing the requirements before the code.

# %% [exercise 3]
demo_dir = tempfile.TemporaryDirectory(prefix="context-")
demo = Path(demo_dir.name)
for rel in ["README.md", "app/main.py", "app/settings.json", "app/scratch.ipynb", ".env",
            "app/config/hf_token.txt", "deploy/prod.pem", "deploy/public.pem",
            "notebooks/explore.ipynb"]:
    (demo / rel).parent.mkdir(parents=True, exist_ok=True)
    (demo / rel).write_text(f"contents of {rel}\n")
# `*.ipynb` matches only at the top of the context (`*` stops at `/`), so app/scratch.ipynb got
# through; `**/` matches in every folder. The `!` line comes after the *.pem rule: the last
# matching line wins.
RULES = """\
**/.env
**/*token*
**/*.pem
!deploy/public.pem
notebooks
**/*.ipynb
"""
context = dockerfile.DockerIgnore.from_text(RULES).context_files(demo)
print(context)
assert context == ["README.md", "app/main.py", "app/settings.json", "deploy/public.pem"]
demo_dir.cleanup()

# %% [exercise 4]
TEAMMATE = "FROM python:3.12-slim\nCMD python -m lab_code.serving app --host 0.0.0.0\n"
url_args = ["--backend-url", "https://abc123.lambda-url.us-east-1.on.aws/"]
teammate = dockerfile.parse_dockerfile(TEAMMATE)
print(dockerfile.container_command(teammate, url_args))
# The arguments replace the whole CMD: the container tries to run a program called
# "--backend-url" and fails to start. And with the shell form, /bin/sh is process 1: it does not
# pass docker stop's SIGTERM to python, so Docker kills the app after 10 seconds.
FIXED = """\
FROM python:3.12-slim
ENTRYPOINT ["python", "-m", "lab_code.serving", "app", "--host", "0.0.0.0"]
CMD ["--port", "7860"]
"""
fixed = dockerfile.parse_dockerfile(FIXED)
print(dockerfile.container_command(fixed))
print(dockerfile.container_command(fixed, url_args))
assert dockerfile.container_command(fixed, url_args) == [
    "python", "-m", "lab_code.serving", "app", "--host", "0.0.0.0", *url_args]
