# %% [context]
import json
import tempfile
from pathlib import Path

from lab_code import devices
from lab_code.measuring import profiling

REFERENCE = Path("..") / "profiling" / "results"  # committed reference results (2-core CPU)
reference = json.loads((REFERENCE / "sweep" / "summary.json").read_text())
bench = json.loads((REFERENCE / "sweep" / "benchmark.json").read_text())

device = devices.resolve_device("auto")
model = profiling.load_model(device=device)
arrays, _ = profiling.load_lines()
traces = Path(tempfile.mkdtemp(prefix="profiling-solutions-"))
profiles = {bs: profiling.profile_batch(model, profiling.make_batch(arrays, bs, device=device),
                                        traces / f"bs{bs}")[0] for bs in (1, 16)}
sweep = profiling.run_study(model, arrays, [1, 2, 4, 8, 16], traces, device, repeats=3, trace=False)
page_result = profiling.compare_page(model, profiling.page_from_lines(arrays), device, repeats=2)

# %% [exercise 1]
def best_batch_size(records, budget_ms=50.0):
    """The batch size with the highest throughput whose p95 latency fits the budget, or None."""
    fits = [r for r in records if r["latency_ms_p95"] <= budget_ms]
    if not fits:
        return None
    return max(fits, key=lambda r: r["throughput_per_s"])["batch_size"]


for budget in (10.0, 50.0, 500.0):
    print(f"budget {budget:5.0f} ms: this run -> batch {best_batch_size(sweep, budget)}, "
          f"reference -> batch {best_batch_size(reference, budget)}")
# A tight budget can leave nothing (None): then the model itself is too slow for the promise,
# and no batch size will fix that; a faster machine or a smaller model would.

# %% [exercise 2]
def model_speedup(page_result):
    """Speedup of the model calls alone, with the shared split into lines taken out."""
    split = page_result["split_s"]
    return (page_result["line_by_line_s"] - split) / (page_result["one_batch_s"] - split)


for name, result in (("this run", page_result), ("reference", bench["page"])):
    print(f"{name}: end to end x{result['speedup']:.2f}, model calls alone "
          f"x{model_speedup(result):.2f} (the split takes {result['split_s'] * 1000:.0f} ms)")
# The model-only speedup is the bigger one: the split into lines costs the same either way, so it
# dilutes the end-to-end gain (Amdahl's law). Batching only speeds up the part that is batched.

# %% [exercise 3]
def top_op(prof):
    """(operator name, share of all self CPU time) of the most expensive operator."""
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]
    top = max(events, key=lambda e: e.self_cpu_time_total)
    return top.key, top.self_cpu_time_total / sum(e.self_cpu_time_total for e in events)


for bs, prof in profiles.items():
    name, share = top_op(prof)
    print(f"batch {bs:>2}: {name} takes {share:.0%} of the self CPU time")
# Which operator wins depends on the machine, so read your own output. On the course's quiet 2-core
# CPU, the convolutions (aten::mkldnn_convolution) and the LSTM (aten::mkldnn_rnn_layer) were close
# at batch 1; at batch 16 the convolutions led and the LSTM's share fell, because batching cut the
# LSTM's cost per line about threefold (wider matrix products for the same sequential steps)
# while the convolutions cost nearly as much per line as before. On a busy machine the picture
# shifts again: run it twice and compare.
