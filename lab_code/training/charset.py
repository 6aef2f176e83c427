"""The characters the model reads: its output alphabet, which the data draws, the fonts must
cover, and the network decodes to (the compiled model carries its own copy)."""

import string

PUNCTUATION = ".,;:'\"!?-()"
CHARSET = string.ascii_uppercase + string.ascii_lowercase + string.digits + " " + PUNCTUATION
