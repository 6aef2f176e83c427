"""deploy/template.yaml, checked offline: cfn-lint through the SAM transform, and every value the
template shares with the code (handler, environment variables, memory, timeout, architecture,
image platform, the Dockerfile and its build argument, the canary's alarms and the URL's
permissions). Change one side alone and a test here fails."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab_code import dockerfile as df
from lab_code.artifacts import MANIFEST_FILE, ONNX_FILE
from lab_code.measuring import costs
from lab_code.serving.limits import ServiceLimits

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "template.yaml"
LAMBDA_DOCKERFILE = ROOT / "docker" / "lambda.Dockerfile"
ENTRY = ROOT / "lab_code" / "serving" / "lambda_function.py"
# CodeDeploy's predefined configurations for Lambda (SAM prefixes CodeDeployDefault.Lambda); a
# misspelt one passes cfn-lint and fails only at deploy time (checked 2026-12-03).
CODEDEPLOY_LAMBDA = {
    "Canary10Percent5Minutes", "Canary10Percent10Minutes", "Canary10Percent15Minutes",
    "Canary10Percent30Minutes", "Linear10PercentEvery1Minute", "Linear10PercentEvery2Minutes",
    "Linear10PercentEvery3Minutes", "Linear10PercentEvery10Minutes", "AllAtOnce"}
PLATFORMS = {"x86_64": "linux/amd64", "arm64": "linux/arm64"}
COLD_START_S = 20  # what the timeout leaves on top of the service's own deadline: model load
MAX_NEW_ACCOUNT_MB = 3008  # new accounts are capped here until AWS raises the quota


class Tagged(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref X -> {"Ref": "X"}, !GetAtt A.B, !Sub ...)."""


def _tag(loader, suffix, node):
    name = "Fn::GetAtt" if suffix == "GetAtt" else ("Ref" if suffix == "Ref" else f"Fn::{suffix}")
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        return {name: value.split(".", 1) if suffix == "GetAtt" else value}
    if isinstance(node, yaml.SequenceNode):
        return {name: loader.construct_sequence(node, deep=True)}
    return {name: loader.construct_mapping(node, deep=True)}


Tagged.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def template() -> dict:
    return yaml.load(TEMPLATE.read_text(), Loader=Tagged)


@pytest.fixture(scope="module")
def function(template) -> dict:
    return template["Resources"]["Recognizer"]


def module_constant(path: Path, name: str):
    """A module-level constant's literal value, read without importing (the Lambda entry loads
    the model when imported)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path.name} defines no {name}")


def string_constants(folder: Path) -> set[str]:
    out = set()
    for path in folder.rglob("*.py"):
        out |= {n.value for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    return out


# --- cfn-lint ------------------------------------------------------------------------------------
def cfn_lint() -> str:
    here = Path(sys.executable).with_name("cfn-lint")
    found = str(here) if here.exists() else shutil.which("cfn-lint")
    if found is None:
        pytest.fail("cfn-lint is not installed: pip install -e '.[dev]' (or pip install cfn-lint)")
    return found


def test_cfn_lint_is_clean_through_the_sam_transform():
    proc = subprocess.run([cfn_lint(), str(TEMPLATE)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cfn_lint_catches_a_broken_template(tmp_path):
    """The lint is not a formality: a retention CloudWatch does not offer fails it."""
    broken = tmp_path / "template.yaml"
    text = TEMPLATE.read_text().replace("Default: 14\n", "Default: 15\n", 1)
    broken.write_text(text.replace("[1, 3, 5, 7, 14,", "[1, 3, 5, 7, 15,"))
    proc = subprocess.run([cfn_lint(), str(broken)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "RetentionInDays" in proc.stdout, proc.stdout


# --- the template and the code agree --------------------------------------------------------------
def test_handler_is_the_images_cmd_and_exists(function):
    command = function["Properties"]["ImageConfig"]["Command"]
    cmd = [s for s in df.read_dockerfile(LAMBDA_DOCKERFILE) if s.instruction == "CMD"][0]
    assert command == list(cmd.words), "the template and the Dockerfile name different handlers"
    module, _, attr = command[0].rpartition(".")
    path = ROOT / Path(*module.split(".")).with_suffix(".py")
    assert path.is_file(), f"{module} does not exist"
    names = {t.id for n in ast.parse(path.read_text()).body if isinstance(n, ast.Assign)
             for t in n.targets if isinstance(t, ast.Name)}
    assert attr in names, f"{module} defines no {attr}"


def test_memory_is_one_vcpu_per_model_thread(function):
    """Lambda's CPU comes with memory (one vCPU at 1,769 MB); the entry runs the model on
    THREADS threads: memory below would starve them, memory above buys CPU nobody uses."""
    threads = module_constant(ENTRY, "THREADS")
    memory = function["Properties"]["MemorySize"]
    assert memory == threads * costs.ONE_VCPU_MB, (memory, threads)
    assert memory <= MAX_NEW_ACCOUNT_MB, "a new account could not deploy it"


def test_timeout_leaves_the_service_its_deadline_and_a_cold_start(function):
    timeout = function["Properties"]["Timeout"]
    assert ServiceLimits().deadline_s + COLD_START_S <= timeout <= 900


def test_architecture_matches_the_image_platform_everywhere(function):
    arch = function["Properties"]["Architectures"]
    assert len(arch) == 1 and arch[0] in PLATFORMS
    platform = PLATFORMS[arch[0]]
    for doc in (ROOT / "docker" / "README.md", ROOT / "deploy" / "README.md"):
        builds = re.findall(r"docker buildx build[^\n]*", doc.read_text())
        assert builds, f"{doc.relative_to(ROOT)} shows no docker buildx build"
        for line in builds:
            assert f"--platform {platform}" in line, f"{doc.relative_to(ROOT)}: {line}"


def test_environment_variables_are_ones_the_code_reads(template, function):
    variables = function["Properties"]["Environment"]["Variables"]
    known = string_constants(ROOT / "lab_code")
    for name in variables:
        assert name in known, f"the template sets {name}, which no module of lab_code reads"
    from lab_code.serving import model_source

    assert variables[model_source.EXPECTED_ENV] == {"Ref": "ModelVersion"}


def test_the_image_is_built_from_the_dockerfile_with_its_model_argument(function):
    meta = function["Metadata"]
    context = (TEMPLATE.parent / meta["DockerContext"]).resolve()
    assert context == ROOT and (context / meta["Dockerfile"]) == LAMBDA_DOCKERFILE
    args = [s for s in df.read_dockerfile(LAMBDA_DOCKERFILE) if s.instruction == "ARG"]
    declared = {s.words[0].split("=")[0] for s in args}
    assert set(meta["DockerBuildArgs"]) <= declared
    model_dir = meta["DockerBuildArgs"]["MODEL_DIR"]
    ignore = df.DockerIgnore.for_build(ROOT)
    assert not ignore.excludes(f"{model_dir}/{ONNX_FILE}"), \
        f".dockerignore keeps {model_dir} out of the build context"
    # the image has no torch: the file fetched, copied and served is the ONNX export
    for text in (TEMPLATE.read_text(), (ROOT / "deploy" / "README.md").read_text()):
        fetches = re.findall(r"python -m lab_code\.registry [^\n]*--out (\S+)", text)
        assert fetches
        for out in fetches:
            assert Path(out).parent.as_posix() == model_dir and Path(out).name == ONNX_FILE
        for line in re.findall(r"python -m lab_code\.registry [^\n]*", text):
            assert "--format onnx" in line, line
    steps = df.read_dockerfile(LAMBDA_DOCKERFILE)
    copy = next(s for s in steps if s.instruction == "COPY" and "${MODEL_DIR}" in s.text)
    for name in (ONNX_FILE, MANIFEST_FILE):
        assert f"${{MODEL_DIR}}/{name}" in copy.text, copy.text
    env = next(s for s in steps if s.instruction == "ENV" and "MODEL_PATH" in s.text)
    assert env.text.rstrip().endswith(f"/model/{ONNX_FILE}"), env.text


def test_deployment_is_a_canary_on_an_alias_with_alarms(template, function):
    props = function["Properties"]
    assert props["AutoPublishAlias"] == "live"
    param = template["Parameters"]["DeploymentType"]
    assert set(param["AllowedValues"]) <= CODEDEPLOY_LAMBDA
    assert param["Default"] in CODEDEPLOY_LAMBDA
    alarms = [a["Ref"] for a in props["DeploymentPreference"]["Alarms"]]
    for name in alarms:
        assert template["Resources"][name]["Type"] == "AWS::CloudWatch::Alarm"
    assert len(alarms) >= 3


def test_emf_alarms_watch_the_released_model_version(template):
    alarms = {k: v["Properties"] for k, v in template["Resources"].items()
              if v["Type"] == "AWS::CloudWatch::Alarm"}
    emf = []
    for props in alarms.values():
        metrics = [props] + [m["MetricStat"]["Metric"] for m in props.get("Metrics", [])
                             if "MetricStat" in m]
        for metric in metrics:
            if metric.get("Namespace", "AWS/Lambda") != "AWS/Lambda":
                dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
                assert dims.get("model_version") == {"Ref": "ModelVersion"}, metric
                emf.append(metric["MetricName"])
    assert {"ocr_requests_total", "ocr_line_confidence"} <= set(emf)


def test_url_is_iam_on_the_alias_and_the_caller_gets_both_permissions(template, function):
    assert function["Properties"]["FunctionUrlConfig"]["AuthType"] == "AWS_IAM"
    statements = template["Resources"]["FrontendUser"]["Properties"]["Policies"][0][
        "PolicyDocument"]["Statement"]
    actions = {s["Action"]: s for s in statements}
    assert set(actions) == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    for statement in statements:
        assert statement["Resource"] == {"Ref": "Recognizer.Alias"}


def test_reserved_concurrency_and_budget_are_optional(template, function):
    reserved = function["Properties"]["ReservedConcurrentExecutions"]
    assert reserved == {"Fn::If": ["HasReservedConcurrency", {"Ref": "ReservedConcurrency"},
                                   {"Ref": "AWS::NoValue"}]}
    assert template["Parameters"]["ReservedConcurrency"]["Default"] == ""
    assert template["Resources"]["MonthlyBudget"]["Condition"] == "HasBudget"


def test_the_role_writes_only_its_own_log_group(template, function):
    assert function["Properties"]["Role"] == {"Fn::GetAtt": ["RecognizerRole", "Arn"]}
    policies = template["Resources"]["RecognizerRole"]["Properties"]["Policies"]
    statements = [s for p in policies for s in p["PolicyDocument"]["Statement"]]
    assert statements == [{"Effect": "Allow",
                           "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                           "Resource": {"Fn::GetAtt": ["RecognizerLogs", "Arn"]}}]
    assert "ManagedPolicyArns" not in template["Resources"]["RecognizerRole"]["Properties"]
