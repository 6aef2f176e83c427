# %% [context]
import torch

from lab_code.training import data, metrics
from lab_code.recognizer import TextRecognizer

recognizer = TextRecognizer()

# %% [exercise 1]
def pick_device(prefer_gpu: bool = True) -> torch.device:
    if prefer_gpu and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


print(pick_device(), pick_device(prefer_gpu=False))

# %% [exercise 2]
sentences = [
    "Serving starts on a CPU.",
    "Batch size 16 beats batch size 1?",
    "Ship the model, not the notebook!",
    "Latency (p95) must stay under 50 ms.",
    "Every error message says what to do.",
]
fonts = data.fonts()
pictures = [data.render(text, data.Style.clean(fonts[(3 * i) % len(fonts)], size=20 + 5 * i))
            for i, text in enumerate(sentences)]
predictions = recognizer.predict_batch(pictures)
for truth, prediction in zip(sentences, predictions):
    print(f"{'ok ' if truth == prediction else 'ERR'} {prediction!r}")
print(f"CER: {metrics.cer(predictions, sentences):.3f}")
