"""The steering inbox: how ``python -m trex_ray steer`` reaches a running search, through the
run's storage. No Ray.

Why storage, not a named Ray actor: a search started with ``ray job submit`` is steered from
wherever its owner is (a laptop, a notebook, another job). What every such place can reach is
the run's storage (the run directory on one machine, an NFS path or ``s3://``/``gs://`` on a
cluster: pyarrow.fs, the same credentials the run's results need). A named actor would need a
Ray client connection into the cluster (its address, port and auth), which the person holding a
job's results often lacks, and it dies with the driver, while an inbox keeps what was sent until
the run resumes. The driver looks at the inbox every ``run.steer_poll_s`` seconds, inside Tune's
own loop (``searcher.SteeringScheduler``), and answers each command in the same storage.

Layout under the run's storage root::

    steer/inbox/<id>.json     commands waiting (one PUT each, by the CLI)
    steer/answers/<id>.json   the driver's reply: applied or refused (one line); status: the view
    steer/driver.json         the driver's heartbeat: running or finished (and why), last look
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

from pydantic import ValidationError

from trex_ray.search.steering import Command, Reply
from trex_ray.storage import RunStorage

log = logging.getLogger(__name__)

INBOX, ANSWERS, DRIVER = "steer/inbox", "steer/answers", "steer/driver.json"


def new_command_id() -> str:
    """Ids sort in the order commands were sent (then at random between equal nanoseconds)."""
    return f"{time.time_ns():020d}-{secrets.token_hex(4)}"


class Inbox:
    def __init__(self, store: RunStorage) -> None:
        self.store = store

    # ------------------------------------------------------------------ the CLI's side
    def post(self, cmd: Command) -> None:
        self.store.write_bytes(f"{INBOX}/{cmd.id}.json", cmd.model_dump_json().encode())

    def reply(self, cmd_id: str) -> Reply | None:
        rel = f"{ANSWERS}/{cmd_id}.json"
        if not self.store.exists(rel):
            return None
        d = json.loads(self.store.read_bytes(rel))
        return Reply(id=d["id"], accepted=bool(d["accepted"]), message=str(d["message"]), status=d.get("status"))

    def wait(self, cmd_id: str, timeout: float, every: float = 0.25) -> Reply | None:
        """The driver's reply to ``cmd_id``, or None when none came within ``timeout`` seconds."""
        deadline = time.time() + timeout
        while True:
            found = self.reply(cmd_id)
            if found is not None or time.time() >= deadline:
                return found
            time.sleep(every)

    def withdraw(self, cmd_id: str) -> bool:
        """Take back a command nobody read yet (True if it was still waiting)."""
        rel = f"{INBOX}/{cmd_id}.json"
        if self.store.exists(rel):
            self.store.fs.delete_file(self.store.path(rel))
            return True
        return False

    def driver(self) -> dict[str, Any] | None:
        """The driver's last heartbeat, or None when no driver ever looked at this inbox."""
        if not self.store.exists(DRIVER):
            return None
        try:
            return json.loads(self.store.read_bytes(DRIVER))
        except ValueError:  # a torn write cannot happen (one PUT / a rename), but stay calm
            return None

    # ------------------------------------------------------------------ the driver's side
    def pending(self) -> list[Command]:
        """Commands waiting, oldest first. One that does not parse is answered (refused) and
        dropped, so a stray file never blocks the inbox."""
        out = []
        for name in self.store.list_dir(INBOX):
            if not name.endswith(".json"):
                continue
            cmd_id = name[: -len(".json")]
            try:
                out.append(Command.model_validate_json(self.store.read_bytes(f"{INBOX}/{name}")))
            except (ValidationError, ValueError, OSError) as e:
                log.warning("steering inbox: unreadable command %s: %s", name, str(e)[:200])
                self.answer(Reply(cmd_id, False, "unreadable command (send it with python -m trex_ray steer)"))
        return out

    def answer(self, reply: Reply) -> None:
        """Write the reply, then take the command out of the inbox (a crash between the two
        re-reads it; the SearchState answers a command it applied before without re-applying)."""
        self.store.write_bytes(f"{ANSWERS}/{reply.id}.json", json.dumps(reply.to_dict(), default=str).encode())
        self.withdraw(reply.id)

    def heartbeat(self, state: str, reason: str | None = None) -> None:
        self.store.write_bytes(DRIVER, json.dumps({"state": state, "reason": reason, "at": time.time()}).encode())
