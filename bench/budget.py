"""Scenario 12, ``budget``: where one delivery's CPU time goes, step by step.

The throughput scenarios (2 and 9) say how far the worker is from a bare client; this one
says why. Each step of the send path is run on its own, in this process, over the same
deliveries, and timed with this thread's CPU clock (``time.thread_time``: what the
receiver and the database spend is not counted; the fastest of three rounds):

- the HTTP call itself, as a bare loop makes it (urllib3; aiohttp with 64 in flight), then
  through dj-webhooks' client (``transport.post``, ``aio.Client.post``: the guarded
  connections, the deadline, the capped read), then as the send path makes it
  (``sending.send``: building and signing the request, the signals, the result);
- building and signing the request alone;
- the database steps, a claim of 100 at a time: the claim, the load, ``prepare`` (the
  ``delivery_sending`` signal and the sender) and the record.

The last rows add them up: the CPU one delivery costs the worker's process, and the most a
process could send a second if nothing else cost anything (one core's worth, as the
interpreter lock allows), beside the bare loop's. That ceiling is what the throughput
targets are measured against.
"""

import asyncio
import time
from importlib.util import find_spec

from bench.scenarios import Row, analyze, fan_out, make_targets, reset_tables

SCENARIO = "12 CPU budget"
ROUNDS = 3
BATCH = 100
IN_FLIGHT = 64
BARE_URLLIB3 = "HTTP call, bare urllib3 loop"
BARE_AIOHTTP = "HTTP call, bare aiohttp loop"
#: The async steps' names, each for what ``_async_steps`` measures.
ASYNC_STEPS = {"bare": BARE_AIOHTTP, "guarded": "HTTP call, aio.Client",
               "send": "HTTP call as sent (sending.send_async)"}


def scenario_budget(ctx):
    from bench.child import bare_urllib3
    from djwebhooks import queue, sending, transport
    from djwebhooks.models import Delivery
    from djwebhooks.senders.base import AttemptResult
    from djwebhooks.senders.orm import DjangoSenderable

    owner = ctx.owner()
    count = ctx.sizes.budget_deliveries
    targets = 10

    def load_rows(rounds):
        reset_tables()
        urls = [f"{ctx.receiver.url}/ok/budget/t{i}" for i in range(targets)]
        make_targets(owner, "bench.fan", urls, ["budget"] * targets)
        fan_out(owner, "budget", rounds * count // targets)
        analyze()

    load_rows(1)
    options = DjangoSenderable.settings_options()
    deliveries = list(Delivery.objects.select_related("webhook_target__owner").order_by("pk"))
    items = [sending.Ready(d, DjangoSenderable(d, options=options)) for d in deliveries]
    requests = []
    for item in items:
        body, headers = item.sender.build_request()
        requests.append((item.sender.url, headers, body))

    def fresh(item):
        item.sender.__dict__.pop("jsonified_payload", None)  # built again, as for a send
        return item

    def bare():
        todo = iter([(url, headers, body.decode()) for url, headers, body in requests])
        bare_urllib3({}, lambda: next(todo, None), options["timeout"], [])

    def client():
        for url, headers, body in requests:
            transport.post(url, body, headers, timeout=options["timeout"],
                           body_limit=options["body_limit"], policy=options["policy"],
                           total_timeout=options["total_timeout"])

    def send():
        for item in items:
            sending.send(fresh(item))

    def build():
        for item in items:
            fresh(item).sender.build_request()

    steps = [(BARE_URLLIB3, bare), ("HTTP call, dj-webhooks' client", client),
             ("HTTP call as sent (sending.send)", send), ("building and signing", build)]
    cpu = {name: _fastest(run, len(items)) for name, run in steps}

    if find_spec("aiohttp") is not None:
        cpu.update(_async_steps(items, requests, options, fresh))

    # The database steps, on fresh pending rows each round.
    answered = AttemptResult(success=True, response_status=200, response_message="ok",
                             response_content_type="text/plain", error="", duration=1,
                             notification="200 OK")
    load_rows(ROUNDS)
    spent = {"claim": [], "load": [], "prepare": [], "record": []}
    for _ in range(ROUNDS):
        clocks = dict.fromkeys(spent, 0.0)
        done = 0
        while done < count:
            started = time.thread_time()
            claim = queue.claim("budget", limit=min(BATCH, count - done), lease=300)
            claimed = time.thread_time()
            loaded = queue.load("budget", claim.ids)
            after_load = time.thread_time()
            ready, _ = sending.prepare(loaded, claimant="budget")
            prepared = time.thread_time()
            sending.record("budget", [(item.delivery, answered) for item in ready],
                           retries_here=True)
            recorded = time.thread_time()
            if not claim.ids:
                break
            done += len(claim.ids)
            clocks["claim"] += claimed - started
            clocks["load"] += after_load - claimed
            clocks["prepare"] += prepared - after_load
            clocks["record"] += recorded - prepared
        for name, seconds in clocks.items():
            if done:
                spent[name].append(seconds * 1e6 / done)
    for name, values in spent.items():
        cpu[f"database: {name} (a claim of {BATCH})"] = min(values)

    database = sum(cpu[f"database: {name} (a claim of {BATCH})"] for name in spent)
    rows = []
    for name, value in cpu.items():
        # The HTTP steps beside their client's bare call; the database steps have none.
        bare_call = None if name.startswith("database") else \
            cpu[BARE_AIOHTTP if name in ASYNC_STEPS.values() else BARE_URLLIB3]
        rows.append(Row(f"{SCENARIO}: {name}", "database", ctx.database,
                        f"{len(items)} deliveries", value, "µs CPU per delivery", bare_call,
                        "the bare call" if bare_call is not None else ""))
        ctx.log(f"  {name}: {value:.1f} µs")
    for mode, sent, bare_name in (
            ("threads", "HTTP call as sent (sending.send)", BARE_URLLIB3),
            ("async", ASYNC_STEPS["send"], BARE_AIOHTTP)):
        if sent not in cpu:
            continue
        whole = cpu[sent] + database
        rows.append(Row(
            f"{SCENARIO}: one delivery in all, {mode}", "database", ctx.database,
            f"{len(items)} deliveries", whole, "µs CPU per delivery", cpu[bare_name],
            f"the bare call ({bare_name.split(', ')[1]})",
            note=(f"the send and the four database steps; at most {1e6 / whole:,.0f} "
                  f"deliveries a second on one core, against {1e6 / cpu[bare_name]:,.0f} "
                  f"for the bare loop: a ceiling of {cpu[bare_name] / whole:.2f}× it"),
            data={"ceiling": cpu[bare_name] / whole},
        ))
        ctx.log(f"  one delivery in all, {mode}: {whole:.1f} µs, a ceiling of "
                f"{cpu[bare_name] / whole:.2f}× the bare loop")
    return rows


def _fastest(run, count):
    """The fastest of ``ROUNDS`` runs of ``run()``, in µs of this thread's CPU per item."""
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.thread_time()
        run()
        best = min(best, time.thread_time() - started)
    return best * 1e6 / count


def _async_steps(items, requests, options, fresh):
    """The HTTP steps on an event loop in this thread, ``IN_FLIGHT`` requests at once."""
    from bench.child import aiohttp_session
    from djwebhooks import aio, sending

    async def measure(kind):
        client = aio.Client()
        session = aiohttp_session()  # the bare loop's, as scenario 9's
        todo = iter(range(len(items)))

        async def bare():
            for i in todo:
                url, headers, body = requests[i]
                async with session.post(url, data=body, headers=headers,
                                        allow_redirects=False) as response:
                    await response.content.read(4096)

        async def guarded():
            for i in todo:
                url, headers, body = requests[i]
                await client.post(url, body, headers, timeout=options["timeout"],
                                  body_limit=options["body_limit"], policy=options["policy"],
                                  total_timeout=options["total_timeout"])

        async def send():
            for i in todo:
                await sending.send_async(fresh(items[i]), client)

        loop = {"bare": bare, "guarded": guarded, "send": send}[kind]
        started = time.thread_time()
        await asyncio.gather(*(loop() for _ in range(IN_FLIGHT)))
        spent = time.thread_time() - started
        await client.close()
        await session.close()
        return spent * 1e6 / len(items)

    return {name: min(asyncio.run(measure(kind)) for _ in range(ROUNDS))
            for kind, name in ASYNC_STEPS.items()}


SCENARIOS = {"budget": scenario_budget}
