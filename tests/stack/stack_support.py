"""Talking to the running stack: Airflow's REST API, Dagster's GraphQL API, its databases.

Everything here goes through the same doors as the UIs: Airflow's public REST API (``/api/v2``,
with the token the UI gets), Dagster's GraphQL endpoint, and the servers' DSNs.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 1.0) -> T:
    """Poll ``probe`` until it returns something truthy (observed progress, not a clock)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def _request(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            text = resp.read().decode()
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{method} {url}: {exc.code} {exc.read().decode()[:2000]}") from exc
    return json.loads(text) if text else None


@dataclass
class Airflow:
    """Airflow's public REST API, authenticated as the UI is (simple auth manager, all admins)."""

    url: str
    _token: str | None = None

    def token(self) -> str:
        if self._token is None:
            self._token = _request("GET", f"{self.url}/auth/token")["access_token"]
        return self._token

    def api(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token()}"}
        return _request(method, f"{self.url}/api/v2{path}", body, headers)

    def unpause(self, dag_id: str) -> None:
        """What the UI's toggle does."""
        self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """What the UI's Trigger button does: a run with ``"logical_date": null``."""
        run = self.api(
            "POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}}
        )
        assert run["logical_date"] is None
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 240) -> str:
        return wait_for(
            f"{dag_id} run {run_id} to finish",
            lambda: s if (s := self.run_state(dag_id, run_id)) in ("success", "failed") else None,
            timeout,
        )

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        data = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
        return list(data["task_instances"])

    def clear(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> list[Any]:
        """What the UI's Clear button does for one mapped task instance."""
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": [[task_id, map_index]],
            "only_failed": False,
            "include_upstream": False,
            "include_downstream": True,
            "include_future": False,
            "include_past": False,
            "reset_dag_runs": True,
        }
        return list(self.api("POST", f"/dags/{dag_id}/clearTaskInstances", body)["task_instances"])

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        path = (
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
            f"?map_index={map_index}&deserialize=true"
        )
        value = self.api("GET", path)["value"]
        return json.loads(value) if isinstance(value, str) else value


@dataclass
class Dagster:
    """Dagster's GraphQL API, as the webserver's UI uses it."""

    url: str
    location: str = "dagster_defs"
    repository: str = "__repository__"
    launched: list[str] = field(default_factory=list)

    def gql(self, query: str, **variables: Any) -> Any:
        data = _request("POST", f"{self.url}/graphql", {"query": query, "variables": variables})
        assert not data.get("errors"), data["errors"]
        return data["data"]

    def launch(self, asset: list[str], partition: str | None = None) -> str:
        """The UI's Materialize button (checks of the asset included)."""
        tags = [{"key": "dagster/partition", "value": partition}] if partition else []
        params = {
            "selector": {
                "repositoryLocationName": self.location,
                "repositoryName": self.repository,
                "jobName": "__ASSET_JOB",
                "assetSelection": [{"path": asset}],
            },
            "runConfigData": {},
            "mode": "default",
            "executionMetadata": {"tags": tags},
        }
        result = self.gql(LAUNCH_RUN, params=params)["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        run_id = str(result["run"]["runId"])
        self.launched.append(run_id)
        return run_id

    def reexecute_from_failure(self, run_id: str) -> str:
        """The UI's "Re-execute from failure"."""
        params = {"parentRunId": run_id, "strategy": "FROM_FAILURE"}
        result = self.gql(REEXECUTE, params=params)["launchRunReexecution"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return str(result["run"]["runId"])

    def backfill(self, asset: list[str], partitions: list[str]) -> str:
        """The UI's "Materialize selected" over partitions: a backfill run by the daemon."""
        params = {
            "assetSelection": [{"path": asset}],
            "partitionNames": partitions,
            "fromFailure": False,
        }
        result = self.gql(BACKFILL, params=params)["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        return str(result["backfillId"])

    def run_status(self, run_id: str) -> str:
        return str(self.gql(RUN_STATUS, id=run_id)["runOrError"]["status"])

    def wait_run(self, run_id: str, timeout: float = 240) -> str:
        done = ("SUCCESS", "FAILURE", "CANCELED")
        return wait_for(
            f"Dagster run {run_id}",
            lambda: s if (s := self.run_status(run_id)) in done else None,
            timeout,
        )

    def step_events(self, run_id: str) -> list[str]:
        data = self.gql(RUN_EVENTS, id=run_id)["logsForRun"]
        return [e["__typename"] for e in data["events"]]

    def latest_materialization(self, asset: list[str], partition: str | None = None) -> Any:
        data = self.gql(
            MATERIALIZATION, key={"path": asset}, partitions=[partition] if partition else None
        )
        (node,) = data["assetNodes"]
        return node


LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""

REEXECUTE = """
mutation($params: ReexecutionParams!) {
  launchRunReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""

BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""

BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status runs(limit: 50) { runId status tags { key value } } }
  }
}"""

RUN_STATUS = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"

RUN_EVENTS = """
query($id: ID!) {
  logsForRun(runId: $id, limit: 1000) {
    ... on EventConnection { events { __typename } }
  }
}"""

MATERIALIZATION = """
query($key: AssetKeyInput!, $partitions: [String!]) {
  assetNodes(assetKeys: [$key]) {
    assetMaterializations(limit: 1, partitions: $partitions) {
      runId partition
      metadataEntries {
        label __typename
        ... on IntMetadataEntry { intValue }
        ... on TextMetadataEntry { text }
        ... on TableSchemaMetadataEntry { schema { columns { name type } } }
        ... on TableColumnLineageMetadataEntry {
          lineage { columnName columnDeps { assetKey { path } columnName } }
        }
      }
    }
    assetChecksOrError {
      ... on AssetChecks {
        checks { name executionForLatestMaterialization { status runId } }
      }
    }
  }
}"""


def metadata(materialization: dict[str, Any]) -> dict[str, Any]:
    """A materialisation's metadata entries by label, as plain values."""
    out: dict[str, Any] = {}
    for entry in materialization["metadataEntries"]:
        kind = entry["__typename"]
        if kind == "IntMetadataEntry":
            out[entry["label"]] = entry["intValue"]
        elif kind == "TextMetadataEntry":
            out[entry["label"]] = entry["text"]
        elif kind == "TableSchemaMetadataEntry":
            out[entry["label"]] = [(c["name"], c["type"]) for c in entry["schema"]["columns"]]
        elif kind == "TableColumnLineageMetadataEntry":
            out[entry["label"]] = {
                d["columnName"]: sorted(
                    ("/".join(x["assetKey"]["path"]), x["columnName"]) for x in d["columnDeps"]
                )
                for d in entry["lineage"]
            }
        else:
            out[entry["label"]] = kind
    return out
