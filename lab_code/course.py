"""The course map: every lesson in order (number, notebook, title, time, what the learner does)
and the pipeline diagram that lesson 00 and every deck draw. It imports nothing.

This is the one home of those facts. `python tools/nb.py map` writes the copies that must be
readable without running anything (the README's lesson table, lesson 00's table and diagram, each
deck's diagram), and tests/test_course.py fails when a copy, a notebook title, a deck, a solutions
file or a lesson's time disagrees with it.

Adding a lesson is one entry in LESSONS and its box in PIPELINE, plus its notebook, solutions
file and deck; then `python tools/nb.py map`. An entry may come before its notebook only when it
says `planned=True` (the tables show it as planned, and nothing else is required of it yet).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Lesson:
    number: str  # "04": notebooks/04_<topic>.ipynb, solutions/04_<topic>.py, slides/04_<topic>.md
    topic: str  # the file names' second part
    title: str  # the notebook's title, after "Lesson NN: "
    name: str  # the short name: tables, and the deck's title after "Lesson NN · "
    minutes: int  # time for a learner, including the exercises (tools/nb.py estimate_minutes)
    goal: str  # "you will ..." in one line
    planned: bool = False  # True while its notebook does not exist yet

    @property
    def stem(self) -> str:
        return f"{self.number}_{self.topic}"


LESSONS: tuple[Lesson, ...] = (
    Lesson("00", "overview", "What we build, and a check of your environment", "Overview", 40,
           "see the whole path, check your environment, run the tests"),
    Lesson("01", "torchscript", "From a trained network to a compiled TorchScript file",
           "TorchScript", 80,
           "compile the model (script vs trace), check parity, stage it in a registry and W&B, "
           "run the CLI, meet `torch.export`"),
    Lesson("02", "profiling", "Batch 1 vs batch 16: profiling inference", "Profiling inference",
           90,
           "profile batch 1 vs batch 16 with `torch.profiler`, read the trace in Perfetto, pick a "
           "batch size under a latency budget"),
    Lesson("03", "gradio_ui", "A Gradio UI around the model", "A Gradio UI", 80,
           "wrap the model in a web page with its limits, call its HTTP API with curl, "
           "`requests` and `gradio_client`"),
    Lesson("04", "serverless_backend", "The model as a serverless backend",
           "A serverless backend", 85,
           "write a Lambda handler with FastAPI and Mangum, run it locally over HTTP, keep its "
           "error contract, put the UI in front of it"),
    Lesson("05", "ngrok_tunnel", "A public URL with ngrok", "A public URL with ngrok", 90,
           "share the UI on a password-protected public URL, meet what a public endpoint meets, "
           "know what ngrok and Colab allow"),
    Lesson("06", "dockerfile_anatomy", "Dockerfile anatomy", "Dockerfile anatomy", 86,
           "read the frontend and Lambda Dockerfiles layer by layer, lint them, predict rebuilds"),
    Lesson("07", "fast_and_cheap", "Fast and cheap", "Fast and cheap", 88,
           "find where a request's time goes, compile for the CPU, tune threads vs workers "
           "and dodge the thread trap, measure on a busy machine, ship the model on ONNX "
           "Runtime without torch, price Lambda vs a server"),
    Lesson("08", "watch", "Watch it in production", "Watch it in production", 90,
           "expose metrics a real Prometheus scrapes (EMF lines in Lambda), test alerting rules, "
           "log every prediction without keeping content, collect corrections with consent, "
           "check confidence and input drift, replay a day and watch the alerts fire"),
    Lesson("09", "release", "Release and roll back", "Release and roll back", 73,
           "serve models by registry alias, rehearse a canary that is rolled back by rule and one "
           "that is promoted, read the deployment as code (AWS SAM), sign the frontend's "
           "requests and host it on a Hugging Face Space"),
)

# Each box's top border carries the number of the lesson that covers it; a deck draws its own
# lesson's boxes in double lines (tools/slides.py).
PIPELINE = """\
┌─00───┐   ┌─00────┐   ┌─00─────────┐   ┌─01─────┐   ┌─01───────┐
│ data │──►│ train │──►│ checkpoint │──►│ export │──►│ registry │
└──────┘   └───────┘   └────────────┘   └────────┘   └────┬─────┘
                                                          │ fetch
┌─02────────┐  measures  ┌─01─────────┐                   │
│ profiling │┈┈┈┈┈┈┈┈┈┈┈►│ recognizer │◄──────────────────┘
└───────────┘            └─────┬──────┘
                   ┌───────────┴────────────┐
             ┌─03──▼─────┐   HTTP    ┌─04───▼─────┐
             │ app       │┈┈┈┈┈┈┈┈┈┈►│ serverless │
             │ (Gradio)  │ optional  │ (Lambda)   │
             └─────┬─────┘           └────────────┘
             ┌─05──▼─────┐
             │ tunnel    │──► public https URL
             └───────────┘
┌─06──────────────────────────────────────────┐
│ Dockerfiles: package app and serverless     │
└─────────────────────────────────────────────┘
┌─07──────────────────────────────────────────┐
│ speed and cost: tune recognizer, serverless │
└─────────────────────────────────────────────┘"""

# Boxes of earlier lessons that a lesson reworks, by the first word inside them: its deck draws
# them in double lines too.
REVISITS: dict[str, tuple[str, ...]] = {"07": ("recognizer", "serverless"),
                                        "08": ("app", "serverless"),
                                        "09": ("registry", "app", "serverless")}


def lesson(number: str) -> Lesson:
    """The lesson numbered `number` ("04"); KeyError with the known numbers otherwise."""
    for found in LESSONS:
        if found.number == number:
            return found
    raise KeyError(f"No lesson {number!r} in the course map: "
                   f"known are {', '.join(x.number for x in LESSONS)}.")
