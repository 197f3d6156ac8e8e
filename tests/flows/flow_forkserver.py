"""Test helper: import the whole stack once, then run each requested nightly flow in a fork.

The crash-recovery test needs two dozen flow runs, each in its own process so that a kill
is a real process death. Importing prefect, torch, feast and great_expectations costs most
of a minute per process on the CI machine, so this server imports them once (before any
thread or torch thread pool exists) and forks a child per run.

Protocol: argv[1] = workspace. One line per run on stdin: a kill spec for FACESURV_KILL_AT,
or "-" for none. One JSON line per run on stdout: {"exit": code}. Children log to
argv[2] (appended). Kill points named "lib:..." are planted inside library calls here:
    lib:feature-parquet-written   after the feature store wrote a part file, before its rename
    lib:materialize-view          after one view reached the online store, before the next / the watermark
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def plant_library_kill_points() -> None:
    import feast
    import pyarrow.parquet as pq

    from flows.faults import checkpoint

    write_table = pq.write_table

    def write_table_then_maybe_die(table, where, *args, **kwargs):
        write_table(table, where, *args, **kwargs)
        if "feature_repo" in str(where):
            checkpoint("lib:feature-parquet-written")

    pq.write_table = write_table_then_maybe_die
    # the first materialisation goes through Feast's materialize, later ones through
    # write_to_online_store; either way, die after one view reached the online store
    for name in ("materialize", "write_to_online_store"):
        original = getattr(feast.FeatureStore, name)

        def then_maybe_die(self, *args, _original=original, **kwargs):
            out = _original(self, *args, **kwargs)
            checkpoint("lib:materialize-view")
            return out

        setattr(feast.FeatureStore, name, then_maybe_die)


def main() -> None:
    workspace, log_path = sys.argv[1], sys.argv[2]
    import feast  # noqa: F401
    import great_expectations  # noqa: F401
    import torch  # noqa: F401

    import embedding.align  # noqa: F401
    import embedding.projection  # noqa: F401
    import features.contracts  # noqa: F401
    import features.store  # noqa: F401
    import features.store.offline  # noqa: F401
    import features.store.retrieval  # noqa: F401
    from facesurv.components import components
    from flows.nightly_embedding import nightly_embedding
    from ground.workspace import Workspace

    # the children inherit these caches: the dlib models and the generator load once
    ws = Workspace(Path(workspace))
    params = ws.load_params()
    parts = components(ws, params)
    _ = parts.aligner
    parts.generator()

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    print(json.dumps({"ready": True}), file=proto)
    for line in sys.stdin:
        spec = line.strip()
        pid = os.fork()
        if pid == 0:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            if spec != "-":
                os.environ["FACESURV_KILL_AT"] = spec
                plant_library_kill_points()
            code = 0
            try:
                print(f"=== run kill={spec}", flush=True)
                nightly_embedding(workspace)
            except BaseException as exc:  # noqa: BLE001 - the parent only needs the exit code
                print(f"run failed: {type(exc).__name__}: {exc}", flush=True)
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"exit": os.waitstatus_to_exitcode(status)}), file=proto)


if __name__ == "__main__":
    main()
