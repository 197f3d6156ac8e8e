"""Model training says what it is doing, with counts, so a long training is never silent."""

from __future__ import annotations


def test_fit_and_evaluate_reports_each_fit_and_evaluation_with_counts(cohort_df, fast_params):
    from training.fit import fit_and_evaluate

    lines: list[str] = []
    fitted = fit_and_evaluate(cohort_df, params=fast_params, progress=lines.append)
    # coxph_clinical and coxnet_latent fitted, the fusion of both, then the three reported models evaluated
    assert len(lines) == 6
    assert [line.rsplit("(", 1)[1] for line in lines] == [f"{i}/6)" for i in range(1, 7)]
    assert lines[0].startswith("training: fitting coxph_clinical on ") and "coxnet_latent" in lines[1]
    assert lines[2].startswith("training: fitting the fusion of coxnet_latent, coxph_clinical")
    evaluated = [line.split()[2] for line in lines[3:]]
    assert evaluated == list(fitted.evaluations)
    assert all(f"on {len(fitted.test_df)} test patients" in line for line in lines[3:])
