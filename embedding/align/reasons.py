"""Why a photo was quarantined: stable, machine-readable codes plus a message for people."""

from __future__ import annotations

# The codes are a contract (manifest.csv, the serving API and dashboards filter on them):
# add new ones, never rename.
# the path cannot or may not be read: missing, a directory, no permission, or not one plain file
# inside the input folder (a link, a hard link, a device, a FIFO, a socket), which is never opened
UNREADABLE = "unreadable"
NOT_AN_IMAGE = "not_an_image"          # empty, or not a format we decode (whatever its extension)
TRUNCATED = "truncated"                # the file ends before the image data does
CORRUPT = "corrupt"                    # the header or the image data are damaged
TOO_LARGE = "too_large"                # more pixels than align.max_pixels (decompression-bomb guard)
UNSUPPORTED_MODE = "unsupported_mode"  # a pixel format with no sound RGB conversion
NO_FACE = "no_face"                    # the detector found no face (or only weak detections)
FACE_TOO_SMALL = "face_too_small"      # faces were found, all smaller than align.min_face_px
MULTIPLE_FACES = "multiple_faces"      # several faces and none clearly dominates (align.multi_face)
DUPLICATE_PHOTO_ID = "duplicate_photo_id"  # two inputs share a file name stem, so one output name
INTERNAL_ERROR = "internal_error"      # an unexpected failure; the message carries the exception

ALL_REASONS = (
    UNREADABLE, NOT_AN_IMAGE, TRUNCATED, CORRUPT, TOO_LARGE, UNSUPPORTED_MODE, NO_FACE,
    FACE_TOO_SMALL, MULTIPLE_FACES, DUPLICATE_PHOTO_ID, INTERNAL_ERROR,
)


class AlignRejected(Exception):
    """A photo that cannot be aligned; `reason` is one of ALL_REASONS, `message` says why in words.

    `details` carries what was measured before the rejection (detections, decode notes) so
    that a quarantined row in the manifest still explains itself.
    """

    def __init__(self, reason: str, message: str, *, details: dict | None = None) -> None:
        if reason not in ALL_REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.details = dict(details or {})
