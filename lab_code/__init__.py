"""lab_code: a small text-line recognizer carried from training to a public URL.

The folders are the sides, and the file list says which code runs in production:

- the core, `lab_code/*.py`, is what production needs and training shares: `preprocess` (the
  pixel contract), `images` (bytes, files and URLs to line arrays, within work limits),
  `urlfetch` (the one URL policy), `recognizer` (loads a compiled file and reads text),
  `artifacts` (file names, loading, hashing, the registry layout), `registry` (fetch a staged
  model, verified), `threads`, `timings`, `devices`, `commands` (the `python -m` entry), and
  `course` (the course map: lessons, titles, times, the pipeline diagram);
- `serving/` runs in production: the HTTP backend (`serverless`, with one room per idea beside
  it: `limits`, `schemas`, `errors`, `cache`, `worker`, `guard`, `logs`, `runner`), its Lambda
  entry (`lambda_function`, `lambda_adapter`), the Gradio UI (`app`), the ngrok `tunnel`,
  LitServe's batching variant (`batching`), the helpers that start servers (`ports`,
  `processes`), and what watches it in production (lesson 08): `metrics` (the names, for
  Prometheus), `emf` (the same names in Lambda), `predictions` (the log), `inputs`,
  `drift`, `corrections`, `feedback` (the UI's side) and `watch` (the hooks);
- `training/` makes the model: `charset`, `data`, `fonts`, `model`, `train`, `export`,
  `stage_model`, `evaluate`, `metrics`, and the Tesseract benchmark (`tesseract`);
- `measuring/` observes and never serves: `profiling` and `traces` (lesson 02), `environment`
  (lesson 00), `cpu_compile` with `runtimes` and `flops`, `loadgen`, `stages`,
  `service_benchmark` and `costs` (lesson 07), `reference`, `drift_report`, `prometheus`, `day`,
  `panels` and `watch_cost` (lesson 08);
- `dockerfile/` explains and lints the course's Dockerfiles (lesson 06).

The core and `serving/` never import `training/` or `measuring/`: a compiled model runs without
the code that defined it (tests/test_boundary.py proves it for every module, by its folder).

Commands: `python -m lab_code.recognizer IMAGE`, and `python -m lab_code.<side> COMMAND` for the
sides (`python -m lab_code.serving` lists its commands; `... serving app --help` shows one's).
"""

__version__ = "0.1.0"
