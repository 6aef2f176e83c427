"""lab_code: a small text-line recognizer carried from training to a public URL.

The package has two sides that meet only through files and three neutral modules:

- training side: `data`, `fonts`, `model`, `train`, `evaluate`, `export`, `stage_model`
  (writes the model registry);
- production side: `images`, `recognizer`, `registry` (fetches a staged model, verified), `app`,
  `serverless`, `tunnel`, `ports`, and lesson 07's `batching` (the recognizer behind LitServe,
  which batches requests on the server);
- neutral, imported by both: `preprocess` (the pixel contract), `artifacts` (file names, loader,
  hashing, the registry layout, W&B settings), `devices` (which torch device).

The production side never imports the training side: a compiled model runs without the code that
defined it (tests/test_boundary.py proves it for every production module). Tools around both:
`metrics`, `profiling`, `costs`, `environment`, `docker_engine`, the `dockerfile` package, and
lesson 07's `loadgen` (a load generator for the HTTP service), `stages` (where a request's time
goes), `cpu_compile` (runtimes for the CPU side by side) and `service_benchmark`.
"""

__version__ = "0.1.0"
