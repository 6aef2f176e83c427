"""The measuring side: profiles, traces, runtime comparisons, load, where a request's time goes,
and what serving costs. It may look at both sides and never serves.
`python -m lab_code.measuring` lists its commands."""
