# %% [context]
import json
from pathlib import Path

import torch

from lab_code import artifacts, preprocess
from lab_code.training import data, export, stage_model
from lab_code.training.train import load_checkpoint

model, _ = load_checkpoint(Path("..") / "models" / "text_recognizer_checkpoint.pt")
scripted = export.script(model)

# %% [exercise 1]
texts = data.english_lines()[:8]
lines = [preprocess.line_array(data.render(t, data.Style.clean(data.fonts()[i]))) for i, t in enumerate(texts)]
one_by_one = [scripted(preprocess.batch([line]))[0] for line in lines]
together = scripted(preprocess.batch(lines))
print("same texts:", one_by_one == together)
widest = preprocess.batch(lines)
diffs = []
for i, line in enumerate(lines):
    alone = scripted.logits(preprocess.batch([line]))
    steps = alone.shape[1]
    diffs.append((scripted.logits(widest)[i, :steps] - alone[0]).abs().max().item())
print(f"largest logit difference from padding: {max(diffs):.3f}")
# The bidirectional LSTM also reads the padding, so scores move a little; the decoded text must
# not. If it did, we would batch lines of similar width together (the recognizer sorts by width)
# or pass the true widths to the model.

# %% [exercise 2]
def parity_on_noise(eager, compiled, n=4, width=300):
    torch.manual_seed(0)
    noise = torch.rand(n, 1, 32, width)
    with torch.inference_mode():
        diff = (eager.logits(noise) - compiled.logits(noise)).abs().max().item()
    return diff < 1e-4, diff


print(parity_on_noise(model, scripted))
broken, _ = load_checkpoint(Path("..") / "models" / "text_recognizer_checkpoint.pt")
with torch.no_grad():
    broken.classify.bias[0] += 1.0
print(parity_on_noise(model, export.script(broken)))

# %% [exercise 3]
def describe(manifest_path):
    manifest_path = Path(manifest_path)
    manifest = json.loads(manifest_path.read_text())
    model_file = manifest_path.parent / manifest["file"]
    return {
        "checkpoint": manifest["source_checkpoint"]["path"],
        "checkpoint_sha256": manifest["source_checkpoint"]["sha256"],
        "held_out_cer": manifest["metrics"]["cer"],
        "code_version": manifest["code_version"],
        "file_matches": artifacts.sha256_file(model_file) == manifest["sha256"],
    }


import tempfile

registry = Path(tempfile.mkdtemp())
staged = stage_model.stage(Path("..") / "models" / "text_recognizer_checkpoint.pt",
                           registry=registry, wandb="off")
print(describe(registry / staged["name"] / staged["version"] / "manifest.json"))
