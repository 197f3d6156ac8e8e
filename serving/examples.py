"""How to call the scoring API, as `facesurv serve` and the demo print it."""

from __future__ import annotations


def curl_examples(base_url: str, token_hint: str = "$FACESURV_TOKEN", patient_id: str = "PATIENT_ID") -> str:
    """How to call the API; printed by `facesurv serve` and the demo."""
    auth = f'-H "Authorization: Bearer {token_hint}"'
    return "\n".join([
        f"  curl -s {auth} -H 'content-type: application/json' -d '{{\"patient_id\": \"{patient_id}\"}}' "
        f"{base_url}/v1/scores",
        f"  curl -s {auth} -F photo=@face.jpg -F patient_id={patient_id} -F age=61 ... {base_url}/v1/scores/photo",
        f"  curl -s {auth} {base_url}/v1/scores/SCORE_ID        # the score with its lineage",
        f"  web page: {base_url}/ui/    OpenAPI: {base_url}/openapi.json",
    ])
