"""The HTTP API: FastAPI app factory. Everything it needs is built by the caller and passed in.

Routes: POST /v1/scores, POST /v1/scores/photo, GET /v1/scores/{score_id}, GET /v1/status,
GET /healthz, GET /readyz, GET /openapi.json and the web page under /ui/. Every /v1/ request
passes the gate first (token, rate limit, body size) and then its scope check: `score` to
score, `read` to read any score or the status. Every error is a JSON body
{"error": {"status", "message"}} with a reason a client can act on; unexpected failures
answer 500 with a request id and the traceback stays in the server log.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from ground.clinical_rules import PATIENT_ID_PATTERN, check_clinical_fields, is_valid_id
from ground.config import ServingParams
from ground.errors import DataError, NotAvailableError
from serving.auth import Principal, TokenStore
from serving.batching import MicroBatcher
from serving.ledger import Ledger, TamperedRecord
from serving.privacy import pseudonym, purge_uploads
from serving.ratelimit import RateLimiter
from serving.scoring import PhotoRejected, Scorer, UnknownPatient, response_from_record

log = logging.getLogger("facesurv.serving")

STATIC_DIR = Path(__file__).resolve().parent / "static"
PHOTO_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}
_SCORE_ID = re.compile(r"^[0-9a-f]{32}$")
_PATIENT_ID = PATIENT_ID_PATTERN
# clinical form fields: names the champion may ask for; values are short scalars
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_MULTIPART_SLACK = 64_000
# auto_error off: the gate answers in the API's own error format
BEARER = HTTPBearer(auto_error=False, description="an API token from `facesurv serve token NAME`")  # part headers and the clinical fields around the photo
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'"),
    (b"cache-control", b"no-store"),
]


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patient_id: str = Field(pattern=_PATIENT_ID, description="The patient's id in the feature store.")


class SurvivalPoint(BaseModel):
    days: int
    probability: float


class ModelRef(BaseModel):
    name: str
    version: str
    alias: str
    run_id: str | None


class ScoreResponse(BaseModel):
    score_id: str
    patient_id: str
    created_at: str
    risk_score: float = Field(description="Cox risk score (log partial hazard): higher means worse prognosis.")
    risk_percentile: float = Field(description="Percentile of the risk score in the training cohort (0-100).")
    survival: list[SurvivalPoint] = Field(description="Predicted survival probability at each horizon.")
    model: ModelRef
    inputs: str = Field(description="online_features or photo_upload")


class LedgerRef(BaseModel):
    seq: int
    hash: str
    prev_hash: str


class ScoreWithLineage(BaseModel):
    score: ScoreResponse
    lineage: dict[str, Any]
    ledger: LedgerRef


class ErrorBody(BaseModel):
    status: int
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status, headers=headers)


class _SecurityHeaders:
    """Plain ASGI middleware (no per-request task overhead) adding the security headers."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + _SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _TooLarge(HTTPException):
    """Raised from the body stream itself, so FastAPI and Starlette's parsers pass it on as a 413."""


# (scope, receive, send, caller, body) -> whether it answered; False: FastAPI's route answers instead
FastScore = Any


class _Gate:
    """Plain ASGI middleware in front of every /v1/ route: the token, the rate limit and the
    body's size are checked before a byte of the body is read or parsed.

    A declared Content-Length over the cap is refused at once; a body sent without one (chunked)
    is counted as it streams and cut at the cap.

    fast_score takes POST /v1/scores's common case (see create_app); the body it read is handed
    on unchanged to FastAPI's route for every request it leaves.
    """

    def __init__(self, app: Any, *, tokens: TokenStore, limiter: RateLimiter, rate_per_minute: int,
                 max_body: int, max_upload: int, fast_score: FastScore | None = None) -> None:
        self.app = app
        self.tokens, self.limiter, self.rate = tokens, limiter, rate_per_minute
        self.max_body, self.max_upload = max_body, max_upload
        self.fast_score = fast_score

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        who = self._who(scope)
        if isinstance(who, JSONResponse):
            await who(scope, receive, send)
            return
        cap = self.max_upload + _MULTIPART_SLACK if scope["path"] == "/v1/scores/photo" else self.max_body
        declared = _header(scope, b"content-length")
        refusal = None
        if declared is not None and not declared.isdigit():
            refusal = _error(400, "Content-Length must be a whole number of bytes")
        elif declared is not None and int(declared) > cap:
            refusal = _error(413, f"request body of {declared} bytes exceeds the limit of {cap} bytes")
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = who
        if self.fast_score is not None and scope["method"] == "POST" and scope["path"] == "/v1/scores":
            await self._fast(scope, receive, send, who, cap)
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise _TooLarge(413, f"request body exceeds the limit of {cap} bytes")
            return message

        await self.app(scope, counted, send)

    async def _fast(self, scope: dict, receive: Any, send: Any, who: Principal, cap: int) -> None:
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > cap:
                await _error(413, f"request body exceeds the limit of {cap} bytes")(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        assert self.fast_score is not None  # __call__ takes this path only with one
        if not await self.fast_score(scope, replay, send, who, body):
            await self.app(scope, replay, send)

    def _who(self, scope: dict) -> Principal | JSONResponse:
        token = _bearer_token(_header(scope, b"authorization"))
        if not token:
            return _error(401, "missing bearer token: send 'Authorization: Bearer <token>'",
                          headers={"WWW-Authenticate": "Bearer"})
        who = self.tokens.authenticate(token)
        if who is None:
            return _error(401, "unknown or revoked API token", headers={"WWW-Authenticate": "Bearer"})
        wait = self.limiter.acquire(who.name)
        if wait > 0:
            return _error(429, f"rate limit of {self.rate} requests per minute for this token exceeded; "
                               f"retry in {wait:.1f} s", headers={"Retry-After": str(max(1, round(wait)))})
        return who


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or unknown bearer token"},
    403: {"model": ErrorResponse, "description": "The token's scope does not allow this"},
    413: {"model": ErrorResponse, "description": "Request body over the limit"},
    422: {"model": ErrorResponse, "description": "Invalid input (the message names it)"},
    429: {"model": ErrorResponse, "description": "Rate limit for this token exceeded"}}


def create_app(*, scorer: Scorer, ledger: Ledger, tokens: TokenStore, settings: ServingParams,
               pseudonym_key: bytes, upload_dir: Path | None = None, max_batch: int = 64,
               clinical_base: str | None = None, age_range: tuple[float, float] | None = None) -> FastAPI:
    """The API over a loaded scorer and an open ledger.

    tokens: who may call; settings: limits (upload bytes/pixels, body bytes, rate per token,
    upload retention); pseudonym_key: keys the patient-id hash written to logs; upload_dir: where
    uploads are kept for settings.upload_retention_s seconds (0: never written); clinical_base
    and age_range: the clinical contract's rules a photo request's fields must pass (the served
    model's base cohort, params.contracts' age range).
    """
    limiter = RateLimiter(settings.rate_limit_per_minute)
    if settings.stage_timers:
        scorer.timers, ledger.timers = {}, {}

    def _record(results: Sequence[Any]) -> list[Any]:
        records = [r for r in results if not isinstance(r, Exception)]
        entries = iter(ledger.append_many(records, anchor_later=True)) if records else iter(())
        return [r if isinstance(r, Exception) else (r, next(entries)) for r in results]

    batcher = MicroBatcher(scorer.score_patients, _record, max_batch=max_batch)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        batcher.start()
        if upload_dir is not None and settings.upload_retention_s > 0:
            purge_uploads(upload_dir, settings.upload_retention_s)
        try:
            yield
        finally:
            await batcher.stop()  # commits the last batch, which the shutdown anchor then covers
            if getattr(ledger, "anchors_at_shutdown", False):
                await asyncio.to_thread(ledger.checkpoint_quietly, "shutdown")

    app = FastAPI(
        title="facesurv risk scores", version="1",
        description="Overall-survival risk scores from online features or a new portrait photo; "
                    "every score is written to a hash-chained lineage ledger before it is returned.",
        lifespan=lifespan, docs_url=None, redoc_url=None,  # the bundled docs pages load from a CDN
    )

    async def score_one(patient_id: str, who: Principal) -> dict[str, Any]:
        """The score document of one id-based request, its record committed to the ledger first."""
        started = time.perf_counter()
        try:
            record, _entry = await batcher.submit((patient_id, who.name))
        except UnknownPatient as exc:
            raise HTTPException(404, str(exc)) from None
        except NotAvailableError as exc:
            raise HTTPException(503, str(exc)) from None
        except DataError as exc:
            raise HTTPException(422, str(exc)) from None
        _log_score(record, who, started)
        return response_from_record(record)

    async def fast_score(scope: dict, receive: Any, send: Any, who: Principal, body: bytes) -> bool:
        """POST /v1/scores in its common case (a JSON body the request model accepts, a token with
        the score scope) without FastAPI's per-request dependency solving, which repeats the gate's
        work. The response is the route's: the same model validates and serialises it. Anything
        else is left to the route, so its error answers stay FastAPI's."""
        if not who.may("score") or _media_type(scope) != b"application/json":
            return False
        try:
            request = ScoreRequest.model_validate_json(body)
        except ValidationError:
            return False
        try:
            doc = await score_one(request.patient_id, who)
        except HTTPException as exc:
            await _error(exc.status_code, str(exc.detail))(scope, receive, send)
            return True
        payload = ScoreResponse.model_validate(doc).model_dump_json().encode("utf-8")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(payload)).encode("latin-1")),
                                (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})
        return True

    app.add_middleware(_Gate, tokens=tokens, limiter=limiter, rate_per_minute=settings.rate_limit_per_minute,
                       max_body=settings.max_body_bytes, max_upload=settings.max_upload_bytes,
                       fast_score=fast_score)
    app.add_middleware(_SecurityHeaders)  # added last = outermost: error answers from the gate get headers too

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return _error(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        rid = uuid.uuid4().hex[:12]
        log.error("request %s %s failed (request id %s)", request.method, request.url.path, rid, exc_info=exc)
        return _error(500, f"internal error (request id {rid}); the server log has the details")

    def allowed(scope: str | None):
        """A dependency: the caller the gate authenticated, refused with 403 without `scope` (None:
        any scope; the route decides). `Security(BEARER)` declares the scheme in the OpenAPI document."""
        async def check(request: Request, _creds: Any = Security(BEARER)) -> Principal:
            who = getattr(request.state, "principal", None)
            if not isinstance(who, Principal):  # only routes under /v1/ pass the gate
                raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
            if scope is not None and not who.may(scope):
                raise HTTPException(403, f"token {who.name!r} lacks the {scope!r} scope; "
                                         f"create one with `facesurv serve token NAME --scope {scope}`")
            return who
        return check

    def own_or_read(who: Principal, record: dict[str, Any]) -> bool:
        return who.may("read") or (who.may("score") and record.get("requested_by") == who.name)

    def _log_score(record: dict[str, Any], who: Principal, started: float) -> None:
        if settings.score_log and log.isEnabledFor(logging.INFO):
            log.info("score %s patient=%s risk=%.4f model=%s/%s by=%s in %.1f ms", record["score_id"],
                     pseudonym(record["patient_id"], pseudonym_key), record["result"]["risk_score"],
                     record["model"]["name"], record["model"]["version"], who.name,
                     (time.perf_counter() - started) * 1000)

    @app.post("/v1/scores", response_model=ScoreResponse, tags=["scores"],
              responses={**_ERRORS, 404: {"model": ErrorResponse, "description": "Patient not in the online store"}})
    async def score_patient(body: ScoreRequest, who: Principal = Depends(allowed("score"))) -> dict[str, Any]:
        """Score a patient from the online feature store with the champion model."""
        return await score_one(body.patient_id, who)

    @app.post("/v1/scores/photo", response_model=ScoreResponse, tags=["scores"],
              responses={**_ERRORS, 411: {"model": ErrorResponse, "description": "No Content-Length"},
                         413: {"model": ErrorResponse, "description": "Upload too large"},
                         415: {"model": ErrorResponse, "description": "Not a JPEG or PNG photo"}},
              openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                  "type": "object", "required": ["photo", "patient_id"],
                  "properties": {"photo": {"type": "string", "format": "binary", "description": "JPEG or PNG"},
                                 "patient_id": {"type": "string", "pattern": _PATIENT_ID}},
                  "additionalProperties": {"type": "string",
                                           "description": "clinical fields the champion model uses"}}}}}})
    async def score_photo(request: Request, who: Principal = Depends(allowed("score"))) -> dict[str, Any]:
        """Align and project a new portrait photo, then score it with the given clinical fields."""
        started = time.perf_counter()
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise HTTPException(415, "send multipart/form-data with a 'photo' file part and the clinical fields")
        declared = request.headers.get("content-length")
        if declared is None or not declared.isdigit():
            # without a length the multipart parser would spool an unbounded body to disk first
            raise HTTPException(411, "send the upload with a Content-Length header (no chunked uploads)")
        if int(declared) > settings.max_upload_bytes + _MULTIPART_SLACK:
            raise HTTPException(413, f"upload of {int(declared)} bytes exceeds the limit of "
                                     f"{settings.max_upload_bytes} bytes")
        try:
            form = await request.form(max_files=1, max_fields=64, max_part_size=4096)
        except HTTPException:
            raise
        except Exception:  # noqa: BLE001 - malformed multipart bodies
            raise HTTPException(400, "malformed multipart body") from None
        try:
            photo = form.get("photo")
            if photo is None or isinstance(photo, str):
                raise HTTPException(422, "photo: a file part named 'photo' is required")
            if photo.content_type not in PHOTO_TYPES:
                raise HTTPException(415, f"photo: content type {photo.content_type!r} is not accepted; "
                                         "send image/jpeg or image/png")
            data = await photo.read(settings.max_upload_bytes + 1)
        finally:
            await form.close()  # deletes Starlette's spooled temporary copy now
        if len(data) > settings.max_upload_bytes:
            raise HTTPException(413, f"photo exceeds the limit of {settings.max_upload_bytes} bytes")
        if not data:
            raise HTTPException(422, "photo: the file is empty")
        _check_image(data, PHOTO_TYPES[photo.content_type], settings.max_upload_pixels)
        patient_id = form.get("patient_id")
        if not isinstance(patient_id, str) or not is_valid_id(patient_id):
            raise HTTPException(422, "patient_id: required; letters, digits and . _ : - (at most 128)")
        fields = _clinical_fields(form)
        if scorer.embed_photo is None:
            raise HTTPException(503, "photo scoring is not available on this server (no generator/aligner loaded)")
        try:
            clinical = check_clinical_fields(fields, base=clinical_base,
                                             columns=scorer.model.input_columns, age_range=age_range)
        except DataError as exc:
            raise HTTPException(422, str(exc)) from None
        try:
            record = await asyncio.to_thread(scorer.score_photo, data, clinical, patient_id=patient_id,
                                             requested_by=who.name)
        except PhotoRejected as exc:
            raise HTTPException(422, f"photo rejected: {exc}") from None
        except NotAvailableError as exc:
            raise HTTPException(503, str(exc)) from None
        except DataError as exc:
            raise HTTPException(422, str(exc)) from None
        await asyncio.to_thread(ledger.append, record)  # the ledger's own lock orders it with batches
        if upload_dir is not None and settings.upload_retention_s > 0:
            await asyncio.to_thread(_keep_upload, upload_dir, record["score_id"], data,
                                    PHOTO_TYPES[photo.content_type], settings.upload_retention_s)
        _log_score(record, who, started)
        return response_from_record(record)

    @app.get("/v1/scores/{score_id}", response_model=ScoreWithLineage, tags=["scores"],
             responses={**_ERRORS, 404: {"model": ErrorResponse, "description": "No such score"},
                        500: {"model": ErrorResponse, "description": "The record failed verification"}})
    async def get_score(score_id: str, who: Principal = Depends(allowed(None))) -> dict[str, Any]:
        """A score with its full lineage record and its place in the ledger's hash chain (a `read`
        token: any score; a `score` token: the scores it made)."""
        if not _SCORE_ID.match(score_id):
            raise HTTPException(422, "score_id must be the 32 lower-case hex characters a score response returned")
        try:
            entry = await asyncio.to_thread(ledger.get, score_id)
        except TamperedRecord as exc:
            log.error("GET /v1/scores/%s: %s", score_id, exc)
            raise HTTPException(500, f"score {score_id}: the ledger record failed verification; "
                                     "an operator should run `facesurv audit verify`") from None
        if entry is None or not own_or_read(who, entry.record):
            # the same answer for another client's score: ids of others' scores are not confirmed
            raise HTTPException(404, f"no score {score_id} in the ledger")
        return {"score": response_from_record(entry.record), "lineage": entry.record,
                "ledger": {"seq": entry.seq, "hash": entry.hash, "prev_hash": entry.prev_hash}}

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    async def problems() -> list[str]:
        found = []
        try:
            await asyncio.to_thread(ledger.count)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            log.warning("readiness: ledger unreachable: %s", exc)
            found.append("ledger unreachable")
        if scorer.read_features is None:
            found.append("no online feature store (id-based scoring unavailable)")
        return found

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """Readiness for a load balancer: champion loaded, ledger reachable, feature store configured.
        No token needed, so it names no model, run or counter (GET /v1/status does, with a token)."""
        found = await problems()
        return JSONResponse({"status": "ready" if not found else "not ready", "problems": found},
                            status_code=200 if not found else 503)

    @app.get("/v1/status", tags=["health"], responses=_ERRORS)
    async def status(_who: Principal = Depends(allowed("read"))) -> dict[str, Any]:
        """What serves: the champion's name, version, alias and run, photo scoring, batching counters."""
        m = scorer.model
        found = await problems()
        return {"status": "ready" if not found else "not ready", "problems": found,
                "model": {"name": m.name, "version": m.version, "alias": m.alias, "run_id": m.run_id},
                "photo_scoring": scorer.embed_photo is not None, "batching": dict(batcher.stats),
                **({"stages": stage_times()} if settings.stage_timers else {})}

    def stage_times() -> dict[str, Any]:
        """CPU seconds so far by stage (serving.stage_timers): what the process spent outside the
        two stage threads and the anchor thread is the event loop's (HTTP, JSON, auth, routing)."""
        stats = batcher.stats
        ledger_times = dict(ledger.timers or {})
        return {"process_cpu_s": time.process_time(), "score_thread_cpu_s": stats["score_cpu_s"],
                "commit_thread_cpu_s": stats["commit_cpu_s"], "score": dict(scorer.timers or {}),
                "ledger": ledger_times, "anchor_cpu_s": ledger_times.get("anchor_s", 0.0)}

    @app.get("/", include_in_schema=False)
    async def index() -> RedirectResponse:
        return RedirectResponse("/ui/")

    app.mount("/ui", StaticFiles(directory=STATIC_DIR, html=True), name="ui")
    return app


def _header(scope: dict, name: bytes) -> str | None:
    """The first value of a request header (ASGI gives the names in lower case), as Starlette reads it."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _bearer_token(authorization: str | None) -> str:
    """The token of an 'Authorization: Bearer <token>' header, parsed by FastAPI's own helper as its
    HTTPBearer does ("" when there is none); read from the ASGI scope, without building a Request."""
    scheme, credentials = get_authorization_scheme_param(authorization)
    if not (scheme and credentials.strip()) or scheme.lower() != "bearer":
        return ""
    return credentials.strip()


def _media_type(scope: dict) -> bytes:
    """The request's Content-Type without parameters, lower case ("" when absent)."""
    return (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower().encode("latin-1")


def _check_image(data: bytes, expected_format: str, max_pixels: int) -> None:
    """Header-only checks before anything decodes the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (w, h) = img.format, img.size
    except (UnidentifiedImageError, OSError, ValueError):
        raise HTTPException(415, "photo: not a readable JPEG or PNG image") from None
    except Image.DecompressionBombError:
        raise HTTPException(413, f"photo has more than {max_pixels} pixels") from None
    if fmt != expected_format:
        raise HTTPException(415, f"photo: declared {expected_format} but the file is {fmt}")
    if w * h > max_pixels:
        raise HTTPException(413, f"photo has {w}x{h} = {w * h} pixels; the limit is {max_pixels}")


def _clinical_fields(form: Any) -> dict[str, str]:
    """The form's clinical fields as sent (text), each name once."""
    out: dict[str, str] = {}
    for key, value in form.multi_items():
        if key in ("photo", "patient_id"):
            continue
        if not _FIELD_NAME.match(key) or not isinstance(value, str):
            raise HTTPException(422, f"field {key[:64]!r}: clinical fields are lower_snake_case text fields")
        if key in out:
            raise HTTPException(422, f"field {key!r} given twice")
        out[key] = value  # parsed and checked by the clinical contract's rules
    return out


def _keep_upload(upload_dir: Path, score_id: str, data: bytes, fmt: str, retention_s: float) -> None:
    upload_dir.mkdir(parents=True, exist_ok=True)
    (upload_dir / f"{score_id}.{fmt.lower()}").write_bytes(data)
    purge_uploads(upload_dir, retention_s)
