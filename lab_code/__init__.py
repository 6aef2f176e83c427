"""lab_code: a small text-line recognizer carried from training to a public URL.

The production side (`images`, `recognizer`, `app`, `serverless`, `tunnel`) never imports the
training side (`data`, `model`, `train`): a compiled model runs without the code that defined it.
"""

__version__ = "0.1.0"
