"""The demo: a semi-synthetic cohort, the whole pipeline on it, figures, a report and a tour of
the scoring API. It sits at the top with the CLI and may use every layer below it."""
