"""The production side: what serves the compiled model to the world (the HTTP backend and its
Lambda entry, the Gradio UI, the tunnel, the LitServe variant). It imports only the core, never
the training or measuring side. `python -m lab_code.serving` lists its commands."""
