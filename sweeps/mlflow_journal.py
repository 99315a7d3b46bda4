"""MLflow writes that survive an unreachable tracking store: `BufferedClient`, an MlflowClient whose writes go to an
append-only journal while the store does not answer, and are replayed, in order, once it does.

The journal is one JSON line per write (`{"n": 7, "op": "set_tag", "args": [run_id, key, value]}`), with everything
the write needs (artifacts as their content), and one line `{"done": 7}` appended after each write replayed; once
every write is replayed the file is removed. So a replay that stops half-way (the store went away again, or the
process died) goes on where it stopped. A write replayed twice (the process died after the store took it and before
its `done` line) changes nothing: a run is created only when none carries its key tag, a metric point keeps its
original timestamp (the store keeps one row per key, timestamp, step and value), and tags, statuses, params and
artifacts are set to the same values again.

A run created while the store is unreachable gets a placeholder id, `pending-run:EXPERIMENT_ID:KEY` (KEY: the value
of its key tag); the writes that name it are journaled under that id and point to the real run on replay.

What counts as unreachable: anything but an answer from the store (connection refused, a timeout, a 5xx after
MLflow's retries, a database that cannot be opened). A store that answers and refuses a write (4xx: a bad value, a
missing run) raises as MlflowClient does; during a replay such a write is reported on stderr and skipped, so one bad
line cannot hold the journal up forever.

MLflow's own HTTP retries are shortened for this process (`RETRY_SETTINGS`; an explicit environment setting wins):
by default a refused connection is retried 7 times with exponential backoff, about 4 minutes per call, inside a
Tune callback that holds up the whole sweep. Here a call gives up after about 2.5 s (2 retries, 0 s then 2 s apart,
up to 0.5 s jitter; 10 s per attempt for a server that accepts connections and hangs): a blip shorter than that is
absorbed, a longer outage is journaled, and nothing is lost either way. The analysis the driver runs at the end
inherits the settings, so it too fails in seconds, not minutes, when the server is down.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import requests
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE, ErrorCode
from mlflow.tracking import MlflowClient

RETRY_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
for _name, _value in RETRY_SETTINGS.items():
    os.environ.setdefault(_name, _value)   # MLflow reads them at every request

JOURNAL_NAME = "mlflow_pending.jsonl"
PENDING = "pending-run:"


def unreachable(error: BaseException) -> bool:
    """The store did not answer (the write can be tried again later), as opposed to answering with a refusal."""
    if isinstance(error, MlflowException):   # a RestException is the server's answer; 5xx: it could not do it now
        return error.get_http_status_code() >= 500
    return isinstance(error, (requests.RequestException, ConnectionError, TimeoutError))


def _reason(error: BaseException) -> str:
    """The heart of an error message: '[Errno 111] Connection refused' rather than MLflow's whole sentence."""
    for pattern in (r"\[Errno -?\d+\][^'\")\]]*", r"Read timed out", r"Max retries exceeded"):
        found = re.search(pattern, str(error))
        if found:
            return found.group(0).strip()
    return (str(error).splitlines() or [type(error).__name__])[0][:160]


class BufferedClient:
    """MlflowClient's writes, journaled while the store is unreachable; reads go to the store.

    Every write first replays the journal if it holds anything (when the store answers again); while writes are
    pending, new ones are journaled behind them, so the store receives every write in the order it was made. Reads
    (any other MlflowClient method) replay the journal first too, so they see what was buffered; they raise while the
    store is unreachable (at once when writes are pending and its /health does not answer): the caller decides what
    it can do without them. `journal` may be set after construction (None: nowhere to buffer, writes raise as
    MlflowClient's do)."""

    def __init__(self, tracking_uri: str, journal: Path | None = None, key_tag: str = "run_key"):
        self.store = MlflowClient(tracking_uri)
        self.tracking_uri, self.journal, self.key_tag = tracking_uri, journal, key_tag
        self.found: dict[str, str] = {}   # placeholder -> run id

    # ---------------------------------------------------------------------------------------------------- writes
    def create_run(self, experiment_id: str, run_name: str, tags: dict) -> str:
        """The run carrying tags[key_tag], created unless one exists; its id, or a placeholder while buffered."""
        placeholder = f"{PENDING}{experiment_id}:{tags[self.key_tag]}"
        return self._write("create_run", experiment_id, run_name, tags, int(time.time() * 1000)) or placeholder

    def log_batch(self, run_id: str, metrics=(), params=()) -> None:
        self._write("log_batch", run_id, [[m.key, m.value, m.timestamp, m.step] for m in metrics],
                    [[p.key, p.value] for p in params])

    def set_tag(self, run_id: str, key: str, value) -> None:
        self._write("set_tag", run_id, key, str(value))

    def delete_tag(self, run_id: str, key: str) -> None:
        """Remove a tag; a tag that is not there is no error."""
        self._write("delete_tag", run_id, key)

    def update_run(self, run_id: str, status: str) -> None:
        self._write("update_run", run_id, status)

    def set_terminated(self, run_id: str, status: str) -> None:
        self._write("set_terminated", run_id, status, int(time.time() * 1000))

    def log_dict(self, run_id: str, dictionary: dict, artifact_file: str) -> None:
        self._write("log_dict", run_id, dictionary, artifact_file)

    def set_experiment_tag(self, experiment_id: str, key: str, value) -> None:
        self._write("set_experiment_tag", experiment_id, key, str(value))

    # ----------------------------------------------------------------------------------------------------- reads
    def __getattr__(self, name: str):
        """Reads: MlflowClient's method of that name, after the journal's replay, placeholders resolved."""
        if "store" not in self.__dict__:   # not set up (copy, unpickling): no store to ask
            raise AttributeError(name)
        method = getattr(self.store, name)

        def read(*args, **kwargs):
            if not self.flush():   # writes wait and the store does not answer: no need to wait for its retries
                raise MlflowException(f"MLflow at {self.tracking_uri} unreachable ({len(self.pending())} write(s) "
                                      "pending)", error_code=TEMPORARILY_UNAVAILABLE)
            return method(*(self._resolve(arg) for arg in args), **kwargs)
        return read

    # ---------------------------------------------------------------------------------------------------- journal
    def pending(self) -> list[dict]:
        """The journal's writes not replayed yet, in order (a line cut short by a crash is skipped)."""
        records = self._records()
        done = {record["done"] for record in records if "done" in record}
        return [record for record in records if "n" in record and record["n"] not in done]

    def flush(self) -> bool:
        """Replay the journal if the store answers; True when nothing is left pending."""
        writes = self.pending()
        if not writes:
            return True
        if not self._answers():
            return False
        replayed = 0
        for record in writes:
            try:
                self._apply(record["op"], record["args"])
            except Exception as error:   # noqa: BLE001 - sorted by unreachable() below
                if unreachable(error):
                    return False   # gone again: the rest waits for the next try
                print(f"MLflow at {self.tracking_uri} refused a buffered write ({record['op']}, journal line "
                      f"{record['n']}): {str(error).splitlines()[0][:300]}; skipped", file=sys.stderr, flush=True)
            self._append({"done": record["n"]})
            replayed += 1
        self.journal.unlink()
        print(f"MLflow at {self.tracking_uri} answers again: replayed {replayed} buffered write(s) from "
              f"{self.journal}", file=sys.stderr, flush=True)
        return True

    def caught_up(self) -> bool:
        """Whether the store has every write (after a last replay) and answers: what reading it back needs."""
        return self.flush() and self._answers()

    def _write(self, op: str, *args):
        if self.pending() and not self.flush():
            self._append({"n": self._next_number(), "op": op, "args": list(args)})
            return None
        try:
            return self._apply(op, list(args))
        except Exception as error:   # noqa: BLE001 - sorted by unreachable()
            if self.journal is None or not unreachable(error):
                raise
            print(f"MLflow at {self.tracking_uri} unreachable: buffering to {self.journal}; results.csv goes on "
                  f"({_reason(error)})", file=sys.stderr, flush=True)
            self._append({"n": self._next_number(), "op": op, "args": list(args)})
            return None

    def _apply(self, op: str, args: list):
        if op == "create_run":
            experiment_id, run_name, tags, start_time = args
            key = tags[self.key_tag]
            found = self.store.search_runs([experiment_id], f"tags.`{self.key_tag}` = '{key}'", max_results=1)
            run = found[0] if found else self.store.create_run(experiment_id, start_time=start_time, tags=tags,
                                                                run_name=run_name)
            self.found[f"{PENDING}{experiment_id}:{key}"] = run.info.run_id
            return run.info.run_id
        if op == "set_experiment_tag":
            return self.store.set_experiment_tag(*args)
        run_id, rest = self._resolve(args[0]), args[1:]
        if op == "log_batch":
            metrics, params = rest
            self.store.log_batch(run_id, metrics=[Metric(*m) for m in metrics], params=[Param(*p) for p in params])
        elif op == "delete_tag":
            try:
                self.store.delete_tag(run_id, *rest)
            except MlflowException as error:
                if error.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                    raise
        else:   # set_tag, update_run, set_terminated, log_dict: MlflowClient's own arguments
            getattr(self.store, op)(run_id, *rest)

    def _resolve(self, run_id):
        """A placeholder's real run id (found by its key tag); anything else as it is."""
        if not (isinstance(run_id, str) and run_id.startswith(PENDING)):
            return run_id
        if run_id not in self.found:
            experiment_id, key = run_id[len(PENDING):].split(":", 1)
            runs = self.store.search_runs([experiment_id], f"tags.`{self.key_tag}` = '{key}'", max_results=1)
            if not runs:
                raise MlflowException(f"no run with {self.key_tag} = {key} yet", RESOURCE_DOES_NOT_EXIST)
            self.found[run_id] = runs[0].info.run_id
        return self.found[run_id]

    def _answers(self) -> bool:
        """A cheap look before a replay: an HTTP server's /health, without MLflow's retries (other stores: yes)."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return True
        try:
            return requests.get(self.tracking_uri.rstrip("/") + "/health", timeout=2).ok
        except requests.RequestException:
            return False

    def _next_number(self) -> int:
        numbers = [0] + [record["n"] for record in self._records() if "n" in record]
        return max(numbers) + 1

    def _records(self) -> list[dict]:
        if self.journal is None or not self.journal.exists():
            return []
        records = []
        for line in self.journal.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return records

    def _append(self, record: dict) -> None:
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal, "ab") as handle:
            if handle.tell() and self._ends_cut():
                handle.write(b"\n")   # a line a crash cut short stays alone on its line
            handle.write(json.dumps(record).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _ends_cut(self) -> bool:
        with open(self.journal, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"
