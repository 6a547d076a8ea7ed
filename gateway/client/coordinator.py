"""A small REST client for the coordinator (docs/coordinator.md, "Python client").

    from gateway.client import CoordinatorClient

    c = CoordinatorClient("https://coordinator.example.org")
    c.login("alice", "...")
    study = c.collaborations()[0]["id"]
    task = c.create_task(study, "echo", {"k": 1})
    done = c.wait(task["id"], timeout=600)      # a tqdm bar: runs finished of total
    value = c.result(task["id"])["value"]

Every failure raises `gateway.client.errors.CoordinatorError` with ``.status`` (the
HTTP status; None when the coordinator could not be reached) and ``.message`` (the
server's ``message``). An expired access token is refreshed once, transparently.
"""

from __future__ import annotations

import time
from typing import Any

import requests

from gateway.client.errors import CoordinatorError

__all__ = ["CoordinatorClient"]

TASK_FINAL = frozenset({"completed", "failed", "cancelled"})
RUN_FINAL = frozenset(
    {"completed", "failed", "expired", "cancelled", "not approved", "killed", "timed out"}
)


class CoordinatorClient:
    """The coordinator's API for a researcher. ``url`` is the coordinator's root
    (``/api`` is added) or its ``/api`` URL."""

    def __init__(self, url: str, *, timeout: float = 30, verify: bool | str = True):
        url = url.rstrip("/")
        self.api_url = url if url.endswith("/api") else url + "/api"
        self.timeout = timeout
        self.session = requests.Session()
        self.session.verify = verify
        self.access_token: str | None = None
        self.refresh_token: str | None = None

    # ------------------------------------------------------------------ plumbing

    def _send(self, method: str, path: str, *, json=None, params=None, auth=True):
        headers = {"Accept": "application/json"}
        if auth and self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        try:
            return self.session.request(
                method,
                self.api_url + path,
                json=json,
                params=params,
                headers=headers,
                timeout=self.timeout,
            )
        except requests.RequestException as e:
            raise CoordinatorError(f"The coordinator could not be reached: {e}") from e

    @staticmethod
    def _raise(response: requests.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = None
        message = None
        details = None
        if isinstance(body, dict):
            message = body.get("message")
            details = body.get("errors")
        message = message or response.reason or f"HTTP {response.status_code}"
        raise CoordinatorError(
            message, status=response.status_code, details=details, server_message=message
        )

    def _request(self, method: str, path: str, *, json=None, params=None) -> Any:
        r = self._send(method, path, json=json, params=params)
        if r.status_code == 401 and self.refresh_token and self._refresh():
            r = self._send(method, path, json=json, params=params)
        if r.status_code >= 400:
            self._raise(r)
        if r.status_code == 204 or not r.content:
            return None
        return r.json()

    def _keep(self, tokens: dict) -> None:
        self.access_token = tokens["access_token"]
        self.refresh_token = tokens["refresh_token"]

    def _refresh(self) -> bool:
        r = self._send(
            "POST", "/auth/refresh", json={"refresh_token": self.refresh_token}, auth=False
        )
        if r.status_code != 200:
            return False
        self._keep(r.json())
        return True

    # ------------------------------------------------------------------ the API

    def login(self, username: str, password: str) -> dict:
        """POST /auth/login; keeps the access and refresh tokens and returns them."""
        r = self._send(
            "POST", "/auth/login", json={"username": username, "password": password}, auth=False
        )
        if r.status_code >= 400:
            self._raise(r)
        tokens = r.json()
        self._keep(tokens)
        return tokens

    def collaborations(self, limit: int = 1000) -> list[dict]:
        """The collaborations the caller has a role in."""
        return self._request("GET", "/collaborations", params={"limit": limit})

    def nodes(self, collaboration_id: int, limit: int = 1000) -> list[dict]:
        """The nodes of one collaboration."""
        params = {"collaboration_id": collaboration_id, "limit": limit}
        return self._request("GET", "/nodes", params=params)

    def create_task(
        self,
        collaboration_id: int,
        algorithm: str,
        parameters: dict | None = None,
        nodes: list[int] | None = None,
        *,
        name: str = "",
        timeout: int | None = None,
    ) -> dict:
        """POST /tasks; ``nodes`` (node ids) defaults to every node of the collaboration."""
        body: dict[str, Any] = {
            "collaboration_id": collaboration_id,
            "algorithm": algorithm,
            "parameters": parameters or {},
        }
        if nodes is not None:
            body["node_ids"] = list(nodes)
        if name:
            body["name"] = name
        if timeout is not None:
            body["timeout"] = timeout
        return self._request("POST", "/tasks", json=body)

    def create_image_task(
        self,
        collaboration_id: int,
        image: str,
        files: dict[str, str] | None = None,
        parameters: Any = None,
        nodes: list[int] | None = None,
        stations: list[int] | None = None,
        **options: Any,
    ) -> dict:
        """POST /image-tasks: ``image`` pinned by digest (``name@sha256:...``), ``files``
        put in the container's /input, ``parameters`` as /input/parameters.json, run at
        ``nodes`` (default every node of the collaboration); ``stations``: node ids the
        script opens through the relay (implies ``relay``), e.g. ``nodes=[1],
        stations=[1, 2]`` runs it once, at node 1, over both; ``options``: ``name``,
        ``timeout``, ``run_timeout``, ``relay`` (docs/client-images.md).
        Follow it with ``image_runs(task_id)``."""
        body: dict[str, Any] = {"collaboration_id": collaboration_id, "image": image}
        body.update(files=files or {}, parameters=parameters, **options)
        if nodes is not None:
            body["node_ids"] = list(nodes)
        if stations is not None:
            body["stations"] = list(stations)
        return self._request("POST", "/image-tasks", json=body)

    def image_runs(self, task_id: int) -> list[dict]:
        """Each node's run of an image task: ``status`` (pending, pulling, starting,
        running, completed, not approved, failed, killed, timed out ...), ``message``,
        ``log`` and, once completed, ``result["outputs"]``."""
        return self._request("GET", f"/tasks/{task_id}/image-runs")

    def task(self, task_id: int) -> dict:
        """One task; ``runs`` counts its runs by status."""
        return self._request("GET", f"/tasks/{task_id}")

    def runs(self, task_id: int) -> list[dict]:
        return self._request("GET", f"/tasks/{task_id}/runs")

    def cancel(self, task_id: int) -> dict:
        return self._request("POST", f"/tasks/{task_id}/cancel")

    def result(self, task_id: int) -> dict:
        """The central result, ``{"task_id", "value", "created_at"}`` (404 until there
        is one)."""
        return self._request("GET", f"/tasks/{task_id}/result")

    def relay_token(self, collaboration_id: int, node_id: int) -> dict:
        """A token for one node's gateway. The coordinator derives the collaboration
        from the node; a node of another collaboration is refused here."""
        token = self._request("POST", "/auth/relay-token", json={"node_id": node_id})
        if token["collaboration_id"] != collaboration_id:
            raise CoordinatorError(
                f"Node {node_id} is not a node of collaboration {collaboration_id}.",
                status=None,
                server_message=None,
            )
        return token

    def datashield_session(
        self,
        collaboration_id: int,
        relay_url: str,
        nodes: list[int | str] | None = None,
        *,
        profile: str = "default",
    ):
        """An opened `datashield.DSSession` over the collaboration's nodes (or ``nodes``,
        ids or names) through the relay at ``relay_url``, with this login; relay tokens
        are fetched and renewed for it (gateway.client.relay)."""
        from gateway.client.relay import relay_session

        return relay_session(self, collaboration_id, relay_url, nodes, profile=profile)

    def wait(
        self, task_id: int, timeout: float = 3600, progress: bool = True, interval: float = 0.5
    ) -> dict:
        """Polls the task until it is completed, failed or cancelled and returns it;
        with ``progress``, a tqdm bar counts its finished runs. Raises CoordinatorError
        (status None) after ``timeout`` seconds."""
        bar = None
        if progress:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # pragma: no cover - tqdm is optional
                tqdm = None
            if tqdm is not None:
                bar = tqdm(total=0, desc=f"task {task_id}", unit="run")
        deadline = time.monotonic() + timeout
        try:
            while True:
                task = self.task(task_id)
                if bar is not None:
                    counts = task.get("runs") or {}
                    total = sum(counts.values()) or len(task.get("node_ids") or [])
                    done = sum(n for s, n in counts.items() if s in RUN_FINAL)
                    if bar.total != total:
                        bar.total = total
                    bar.n = done
                    bar.set_postfix_str(task["status"], refresh=False)
                    bar.refresh()
                if task["status"] in TASK_FINAL:
                    return task
                if time.monotonic() >= deadline:
                    raise CoordinatorError(
                        f"Task {task_id} is still {task['status']} after {timeout} s."
                    )
                time.sleep(interval)
        finally:
            if bar is not None:
                bar.close()
