"""Records into answers: everything here is computed from stored records (MLflow runs read back as
TrialRecords, Optuna studies through the sweep room's results), never from a running sweep.

- verdicts      the best trial by one rule, its noise (separable? near chance?), summaries
- confirmation  the report of `asha-tune confirm`
- comparison    `asha-tune compare`'s types and computation; render (text, CSV), plots (PNGs)
- compare       reads the sweeps from MLflow, writes the outputs, logs a comparison run
- reference     what judging a difference from the paper needs (published figures, seed spreads)
- replicates, tables, matters  replicated searches, the DomainBed-style table, what matters
- report        `asha-tune report`: compare's answer as one HTML page; page (what it says),
                page_plots (Plotly figures), page_html (Jinja2, templates/), all from compare's results

May import the spaces and tracking rooms, trial's torch-free modules, matplotlib, plotly, jinja2,
scipy and the kernel; never torch, Ray or Optuna.
"""
