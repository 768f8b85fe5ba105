"""Drives real MCP sessions with the official Python SDK client and reports
what it did, so that the end-to-end tests can compare the agent's events
with the client's own account.

Usage: drive.py PLAN_JSON   (the plan is a JSON object, see below)

Plan:
  {
    "sessions": [            # run concurrently, one client each
      {
        "server": ["cmd", "arg", ...],         # stdio server command, or
        "url": "https://127.0.0.1:8443/mcp",   # an HTTP server's endpoint
        "transport": "http" | "sse",           # with url: Streamable HTTP or legacy SSE
        "ca": "/path/cert.pem",                # with https: the certificate to trust
        "headers": {"Authorization": "..."},   # with url: extra request headers
        "start_after": "/path",                # wait for this file before connecting
        "env": {"K": "V"},                     # extra server environment
        "mode": "legacy" | "auto" | "2026-07-28",
        "client_name": "e2e-client",
        "sampling": true,                      # answer sampling/createMessage
        "elicit": {"action": "accept", "content": {...}, "delay": 0.5},
                                               # answer elicitations (after `delay` s)
        "roots": true,                         # answer roots/list
        "steps": [
          {"call": "trigger-long-running-operation", "args": {}, "progress": true},
          {"call": "add", "args": {"a": 1, "b": 2}, "repeat": 3},
          {"call": "add", "args": {...}, "meta": {"traceparent": "00-..."}},  # request _meta
          {"call": "sleep", "args": {"seconds": 5}, "cancel_after": 0.3},
          {"call": "sleep", "args": {"seconds": 30}, "kill_server_after": 0.5},
          {"list_tools": true}, {"list_prompts": true}, {"list_resources": true},
          {"get_prompt": "greet", "args": {"name": "x"}},
          {"read_resource": "test://config"},
          {"ping": true},
          {"raw": "no/such_method"},          # a request the server rejects
          {"touch": "/path"},                  # create a file (tell the test)
          {"wait_for_file": "/path"},          # pause until the file exists
          {"sleep": 0.2}
        ]
      }
    ]
  }

Output (stdout, one JSON object): per session the server pid (from the
`whoami` tool when the server has it), the negotiated protocol version, and
per step: what was called, its outcome as the client saw it (ok, is_error,
error with code, cancelled, exited) and its round-trip time.
"""

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import ssl

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CreateMessageResult, ElicitResult, Implementation, ListRootsResult, Root, TextContent


async def answer_sampling(context, params):
    return CreateMessageResult(role="assistant", content=TextContent(type="text", text="sampled"), model="e2e-model")


def answer_elicitation(spec):
    async def answer(context, params):
        await anyio.sleep(spec.get("delay", 0))
        return ElicitResult(action=spec.get("action", "accept"), content=spec.get("content"))

    return answer


async def answer_roots(context):
    return ListRootsResult(roots=[Root(uri="file:///tmp", name="tmp")])


def outcome_of_result(result) -> dict:
    return {"outcome": "is_error" if getattr(result, "is_error", False) else "ok"}


async def timed(coro):
    start = time.monotonic()
    try:
        result = await coro
        out = outcome_of_result(result)
    except MCPError as e:
        out = {"outcome": "error", "code": e.error.code, "message": e.error.message}
    except Exception as e:  # noqa: BLE001 - the test wants to know what happened
        out = {"outcome": "exception", "message": f"{type(e).__name__}: {e}"}
    out["rtt_s"] = time.monotonic() - start
    return out


async def server_pid(client) -> int | None:
    try:
        result = await client.call_tool("whoami", {})
    except Exception:  # noqa: BLE001
        return None
    for item in result.content:
        text = getattr(item, "text", None)
        if text and text.strip().isdigit():
            return int(text.strip())
    return None


async def run_step(client, step, state, log):
    if "call" in step:
        for _ in range(step.get("repeat", 1)):
            entry = {"step": "call", "tool": step["call"]}
            progress = []

            async def on_progress(value, total, message):
                progress.append(value)

            kwargs = {"progress_callback": on_progress} if step.get("progress") else {}
            if "meta" in step:
                kwargs["meta"] = step["meta"]
            call = client.call_tool(step["call"], step.get("args", {}), **kwargs)
            if "cancel_after" in step:
                start = time.monotonic()
                with anyio.move_on_after(step["cancel_after"]) as scope:
                    await call
                entry.update({"outcome": "cancelled" if scope.cancelled_caught else "ok", "rtt_s": time.monotonic() - start})
            elif "kill_server_after" in step:
                start = time.monotonic()

                async def kill_later():
                    await anyio.sleep(step["kill_server_after"])
                    os.kill(state["pid"], signal.SIGKILL)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(kill_later)
                    try:
                        await call
                        entry["outcome"] = "ok"
                    except Exception as e:  # noqa: BLE001
                        entry["outcome"] = "exited"
                        entry["message"] = f"{type(e).__name__}"
                entry["rtt_s"] = time.monotonic() - start
                log.append(entry)
                state["killed"] = True
                return
            else:
                entry.update(await timed(call))
            if step.get("progress"):
                entry["progress_notifications"] = len(progress)
            log.append(entry)
    elif step.get("list_tools"):
        log.append({"step": "tools/list", **(await timed(client.list_tools()))})
    elif step.get("list_prompts"):
        log.append({"step": "prompts/list", **(await timed(client.list_prompts()))})
    elif step.get("list_resources"):
        log.append({"step": "resources/list", **(await timed(client.list_resources()))})
    elif "get_prompt" in step:
        log.append({"step": "prompts/get", "name": step["get_prompt"], **(await timed(client.get_prompt(step["get_prompt"], step.get("args", {}))))})
    elif "read_resource" in step:
        log.append({"step": "resources/read", "uri": step["read_resource"], **(await timed(client.read_resource(step["read_resource"])))})
    elif step.get("ping"):
        log.append({"step": "ping", **(await timed(client.send_ping()))})
    elif "raw" in step:
        # A method the server does not know: a JSON-RPC error comes back.
        coro = client.session._dispatcher.send_raw_request(step["raw"], {}, {})  # noqa: SLF001
        log.append({"step": "raw", "method": step["raw"], **(await timed(coro))})
    elif "touch" in step:
        Path(step["touch"]).touch()
    elif "wait_for_file" in step:
        path = Path(step["wait_for_file"])
        while not path.exists():
            await anyio.sleep(0.05)
    elif "sleep" in step:
        await anyio.sleep(step["sleep"])
    else:
        raise ValueError(f"unknown step {step}")


def http_transport(spec, stack):
    """A Streamable HTTP or legacy SSE transport to spec["url"]."""
    verify = ssl.create_default_context(cafile=spec["ca"]) if spec.get("ca") else True
    timeout = httpx2.Timeout(30, read=300)
    extra = spec.get("headers", {})
    if spec.get("transport", "http") == "sse":
        def factory(headers=None, timeout=timeout, auth=None):
            return httpx2.AsyncClient(headers={**(headers or {}), **extra}, timeout=timeout, auth=auth, verify=verify)

        return sse_client(spec["url"], httpx_client_factory=factory)
    client = httpx2.AsyncClient(verify=verify, timeout=timeout, headers=extra)
    stack.append(client)
    return streamable_http_client(spec["url"], http_client=client)


async def run_session(spec) -> dict:
    if "start_after" in spec:
        while not Path(spec["start_after"]).exists():
            await anyio.sleep(0.05)
    env = dict(os.environ)
    env.update(spec.get("env", {}))
    owned = []
    if "url" in spec:
        params = http_transport(spec, owned)
    else:
        params = StdioServerParameters(command=spec["server"][0], args=spec["server"][1:], env=env)
    mode = spec.get("mode", "legacy")
    info = Implementation(name=spec.get("client_name", "mcptap-e2e-client"), version="1.0.0")
    log: list[dict] = []
    state: dict = {}
    report = {"mode": mode, "steps": log}
    try:
        callbacks = {}
        if spec.get("sampling"):
            callbacks["sampling_callback"] = answer_sampling
        if spec.get("roots"):
            callbacks["list_roots_callback"] = answer_roots
        if spec.get("elicit"):
            callbacks["elicitation_callback"] = answer_elicitation(spec["elicit"])
        async with Client(params, mode=mode, client_info=info, read_timeout_seconds=120, **callbacks) as client:
            report["protocol_version"] = client.protocol_version
            state["pid"] = await server_pid(client)
            report["server_pid"] = state["pid"]
            for step in spec["steps"]:
                await run_step(client, step, state, log)
                if state.get("killed"):
                    break
    except Exception as e:  # noqa: BLE001 - a killed server ends the session with an error
        if not state.get("killed"):
            report["error"] = f"{type(e).__name__}: {e}"
    finally:
        for client in owned:
            await client.aclose()
    report["client_pid"] = os.getpid()
    return report


async def main():
    plan = json.loads(sys.argv[1])
    reports = await asyncio.gather(*(run_session(s) for s in plan["sessions"]))
    print(json.dumps({"sessions": reports}))


if __name__ == "__main__":
    asyncio.run(main())
