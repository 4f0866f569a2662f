"""Locust on scaletestd's create / wait / delete flow, for the benchmark's peer comparison.

Locust has no event streams, so each user polls at the intervals of Coder's own scale-test
harness: the build every 500 ms, the agents every second. Run by benches/scale (report.rs).
"""
import os
import time
import uuid

from locust import HttpUser, constant, task

TOKEN = os.environ["CODER_SESSION_TOKEN"]
DONE = ("succeeded", "failed", "canceled")


class Lifecycle(HttpUser):
    wait_time = constant(0)

    def on_start(self):
        self.client.headers["Coder-Session-Token"] = TOKEN
        r = self.client.get("/api/v2/organizations/coder/templates/docker", name="template")
        self.template = r.json()["id"]

    def workspace(self, wid):
        return self.client.get(f"/api/v2/workspaces/{wid}", name="workspace")

    @task
    def lifecycle(self):
        started = time.monotonic()
        name = "lc-" + uuid.uuid4().hex[:12]
        r = self.client.post(
            "/api/v2/users/me/workspaces",
            json={"template_id": self.template, "name": name},
            name="create",
        )
        if r.status_code != 201:
            return
        wid = r.json()["id"]
        ws = r.json()
        while ws["latest_build"]["job"]["status"] not in DONE:
            self._sleep(0.5)
            ws = self.workspace(wid).json()
        while True:
            agents = [a for res in ws["latest_build"]["resources"] for a in res.get("agents") or []]
            if agents and all(a["lifecycle_state"] == "ready" for a in agents):
                break
            self._sleep(1.0)
            ws = self.workspace(wid).json()
        self.client.post(
            f"/api/v2/workspaces/{wid}/builds", json={"transition": "delete"}, name="delete"
        )
        while True:
            self._sleep(0.5)
            r = self.workspace(wid)
            if r.status_code >= 400:
                break
            b = r.json()["latest_build"]
            if b["transition"] == "delete" and b["job"]["status"] in DONE:
                break
        # A completed lifecycle, counted in the stats as a pseudo-request "lifecycle" so the
        # benchmark can report CPU per lifecycle.
        self.environment.events.request.fire(
            request_type="LIFECYCLE",
            name="lifecycle",
            response_time=(time.monotonic() - started) * 1000.0,
            response_length=0,
            exception=None,
            context={},
        )

    def _sleep(self, seconds):
        import gevent

        gevent.sleep(seconds)
