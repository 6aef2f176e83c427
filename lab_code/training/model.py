"""The line recognizer: a small CNN reads a text-line image into a sequence of feature columns,
a bidirectional LSTM reads that sequence, and CTC greedy decoding turns it into a string.

The whole inference path, image-batch tensor in and list of strings out, compiles with
`torch.jit.script`, so the compiled file needs neither this code nor the charset file.
"""

import torch
from torch import Tensor, nn

from lab_code.preprocess import HEIGHT


def _block(cin: int, cout: int, pool: tuple[int, int] | None) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]
    if pool is not None:
        layers.append(nn.MaxPool2d(pool, pool))
    return nn.Sequential(*layers)


class LineRecognizer(nn.Module):
    """(B, 1, 32, W) float images, ink = 1 on a 0 background -> B strings.

    Output steps: one per 4 input columns. Class 0 is the CTC blank; class i is charset[i - 1].
    """

    charset: list[str]
    height: int

    def __init__(self, charset: str, channels: tuple[int, ...] = (16, 32, 64, 64, 96),
                 hidden: int = 128) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = channels
        self.charset: list[str] = list(charset)
        self.height: int = HEIGHT
        self.features = nn.Sequential(
            _block(1, c1, (2, 2)),    # 16 x W/2
            _block(c1, c2, (2, 2)),   # 8 x W/4
            _block(c2, c3, None),
            _block(c3, c4, (2, 1)),   # 4 x W/4
            _block(c4, c5, (2, 1)),   # 2 x W/4
        )
        self.collapse = nn.Conv2d(c5, c5, kernel_size=(2, 1))  # height 2 -> 1
        self.rnn = nn.LSTM(c5, hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(0.1)
        self.classify = nn.Linear(2 * hidden, len(charset) + 1)

    def logits(self, images: Tensor) -> Tensor:
        """Per-step class scores, shape (B, T, classes), T = W // 4."""
        x = self.features(images)
        x = torch.relu(self.collapse(x)).squeeze(2)  # (B, C, T)
        x, _ = self.rnn(x.transpose(1, 2))  # (B, T, 2H)
        return self.classify(self.dropout(x))

    def decode(self, logits: Tensor) -> list[str]:
        """CTC greedy decoding: best class per step, merge repeats, drop blanks."""
        best = logits.argmax(dim=-1)
        texts: list[str] = []
        rows: list[list[int]] = best.tolist()
        for row in rows:
            chars: list[str] = []
            previous = 0
            for index in row:
                if index != previous and index != 0:
                    chars.append(self.charset[index - 1])
                previous = index
            texts.append("".join(chars).strip())
        return texts

    def forward(self, images: Tensor) -> list[str]:
        return self.decode(self.logits(images))


class LogitsOnly(nn.Module):
    """Just the tensor part of the model, for `torch.export` (which cannot return strings)."""

    def __init__(self, model: LineRecognizer) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model.logits(images)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
