"""Records into answers: everything here is computed from stored records (MLflow runs read back as
TrialRecords, Optuna studies through the sweep room's results), never from a running sweep.

- verdicts      the best trial with its noise, as printed (tracking.best decides both)
- estimates     mean, sd, SE and t-interval of independent measurements (replicates, seeds)
- confirmation  the report of `asha-tune confirm`
- curves        `asha-tune compare`'s figures: best so far against budget, each sweep's best, a
                replayed grid against the paper; render (text, CSV), plots (PNGs)
- compare       reads the sweeps (tracking.records), writes the outputs, logs a comparison run
- reference     what judging a difference from the paper needs (published figures, seed spreads)
- replicate_stats  the winner of a search as a random variable: mean ± SE over replicates,
                separation, selection gaps, from plain records
- answers       a search's replicates as one answer (compare's replicate-level answers, the
                replicated search's end report); tables (DomainBed-style), matters (what matters)
- report        `asha-tune report`: compare's answer as one HTML page; page (what it says),
                page_plots (Plotly figures), page_html (Jinja2, templates/), all from compare's results

May import the spaces and tracking rooms, trial's torch-free modules, matplotlib, plotly, jinja2,
scipy and the kernel; never torch, Ray or Optuna.
"""
