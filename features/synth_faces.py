"""Real faces for a semi-synthetic cohort: each patient gets a distinct labelled photo of the
same sex whose age differs from the patient's clinical age by an apparent-age gap g.

    labels = read_face_labels(faces_dir)                         # file, age, sex, race_group
    match = assign_faces(ages, sexes, labels, gap_sd=10, rng=rng)  # photo per patient and its gap

g is drawn from N(0, gap_sd²); the photo is the unused one of the patient's sex whose labelled
age is nearest to age + g, and the gap the face then carries is the realised one
(photo age − clinical age). The face's log-hazard contribution is ln(HR) · g / 10: looking a
decade older than one's age multiplies the hazard by HR (FaceAge, Bontempi et al. 2025,
measured HR 1.151 per decade of face-estimated age). Nothing here sees an outcome.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ground.errors import DataError

LABEL_FILE = "labels.csv"
LABEL_COLUMNS = ("file", "age", "sex")
SEX_CODES = {"F": "female", "M": "male", "female": "female", "male": "male"}
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class FaceLabels:
    """One row per usable photo of a labelled face folder."""

    root: Path
    file: np.ndarray        # (m,) str, file names inside root
    age: np.ndarray         # (m,) float
    sex: np.ndarray         # (m,) str: female | male
    group: np.ndarray       # (m,) str: race group for fairness audits ("" when unlabelled); never a model input


@dataclass(frozen=True)
class FaceMatch:
    index: np.ndarray       # (n,) row of FaceLabels per patient
    gap_drawn: np.ndarray   # (n,) the drawn g
    gap: np.ndarray         # (n,) realised g = photo age − clinical age
    sex: np.ndarray         # (n,) the sex the photo was matched on


def read_face_labels(faces_dir: Path) -> FaceLabels:
    """Read DIR/labels.csv (file, age, sex[, race_group]); rows naming a missing file, a file
    outside DIR or a non-photo are refused with the row's number."""
    root = Path(faces_dir)
    path = root / LABEL_FILE
    if not root.is_dir():
        raise DataError(f"{root}: no such face folder; pass --faces DIR holding photos and {LABEL_FILE}")
    if not path.is_file():
        raise DataError(f"{path}: missing; a face folder needs {LABEL_FILE} with columns file, age, sex")
    files, ages, sexes, groups = [], [], [], []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in LABEL_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: lacks column(s) {', '.join(missing)}; it needs file, age, sex")
        resolved_root = root.resolve()
        for line, row in enumerate(reader, start=2):
            name = (row.get("file") or "").strip()
            candidate = root / name
            if (not name or Path(name).name != name or Path(name).suffix.lower() not in PHOTO_SUFFIXES
                    or candidate.is_symlink() or not candidate.is_file()
                    or candidate.resolve().parent != resolved_root):
                raise DataError(f"{path}:{line}: {name!r} is not a photo file directly inside {root}")
            try:
                age = float(row["age"])
            except (TypeError, ValueError):
                raise DataError(f"{path}:{line}: age {row.get('age')!r} is not a number") from None
            if not 0 <= age <= 120:
                raise DataError(f"{path}:{line}: age {age:g} is outside 0-120")
            sex = SEX_CODES.get((row.get("sex") or "").strip())
            if sex is None:
                raise DataError(f"{path}:{line}: sex {row.get('sex')!r} must be M, F, male or female")
            files.append(name)
            ages.append(age)
            sexes.append(sex)
            groups.append((row.get("race_group") or "").strip())
    if not files:
        raise DataError(f"{path}: no labelled photos")
    return FaceLabels(root, np.array(files), np.array(ages, dtype=float), np.array(sexes), np.array(groups))


def assign_faces(ages: np.ndarray, sexes: np.ndarray, labels: FaceLabels, *, gap_sd: float,
                 rng: np.random.Generator) -> FaceMatch:
    """A distinct photo per patient, matched on sex and on age + g with g ~ N(0, gap_sd²).

    ages (n,) clinical ages in years; sexes (n,) female | male | unknown (unknown: a seeded
    coin decides which photos to draw from). Patients are served in a seeded random order
    so that no one is systematically left the worst-matching photos; ties between photos of
    equal age are broken at random.
    """
    ages = np.asarray(ages, dtype=float)
    sexes = np.asarray(sexes).astype(str)
    n = len(ages)
    if gap_sd < 0:
        raise DataError(f"apparent-age gap sd must be >= 0, got {gap_sd}")
    if not np.isfinite(ages).all():
        raise DataError("every patient needs a finite clinical age to be matched to a face")
    coin = rng.random(n) < 0.5
    match_sex = np.where(np.isin(sexes, ("female", "male")), sexes, np.where(coin, "female", "male"))
    for sex in ("female", "male"):
        need, have = int((match_sex == sex).sum()), int((labels.sex == sex).sum())
        if need > have:
            raise DataError(f"{labels.root}: {need} {sex} patients need distinct photos but only {have} "
                            f"{sex} photos are labelled; pass fewer --patients or a larger face folder")
    gap_drawn = rng.normal(0.0, gap_sd, size=n)
    jitter = rng.random(len(labels.file))          # random tie-breaks among photos of equal age
    order = rng.permutation(n)
    used = np.zeros(len(labels.file), dtype=bool)
    index = np.empty(n, dtype=int)
    for i in order:
        pool = np.flatnonzero((labels.sex == match_sex[i]) & ~used)
        distance = np.abs(labels.age[pool] - (ages[i] + gap_drawn[i]))
        pick = pool[np.lexsort((jitter[pool], distance))[0]]
        used[pick] = True
        index[i] = pick
    return FaceMatch(index=index, gap_drawn=gap_drawn, gap=labels.age[index] - ages, sex=match_sex)


def face_log_hazard(gap_years: np.ndarray, *, hr_per_decade: float) -> np.ndarray:
    """LP_face = ln(HR) · g / 10 for apparent-age gaps g (n,) in years."""
    if not hr_per_decade > 0:
        raise DataError(f"hazard ratio per decade must be > 0, got {hr_per_decade}")
    return np.log(hr_per_decade) * np.asarray(gap_years, dtype=float) / 10.0
