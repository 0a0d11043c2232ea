"""Drives `terrarium serve` over stdio with the official MCP Python SDK (the client most users'
tools are built on) and the real Terraform: list, validate, plan with progress, apply, output,
and a rejected call. Exits non-zero on the first failed check.

Usage: sdk_stdio.py TERRARIUM_BIN TERRAFORM_BIN FIXTURES_DIR
"""

import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

PASSED = 0


def check(cond, what):
    global PASSED
    if not cond:
        raise AssertionError(what)
    PASSED += 1
    print(f"ok - {what}")


async def main(terrarium: str, terraform: str, fixtures: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        shutil.copytree(Path(fixtures) / "basic", root / "basic")
        params = StdioServerParameters(
            command=terrarium,
            args=["serve"],
            env={
                "TERRARIUM_WORKSPACE_ROOT": str(root),
                "TERRARIUM_STATE_DIR": str(Path(tmp) / "state"),
                "TERRARIUM_TERRAFORM_BIN": terraform,
                "TERRARIUM_ENABLE_APPLY": "true",
                "TERRARIUM_AUDIT_DIR": str(Path(tmp) / "audit"),
            },
        )
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                check(init.server_info.name == "terrarium", "initialize names the server")

                tools = (await session.list_tools()).tools
                names = [t.name for t in tools]
                check("terraform_plan" in names and "terraform_apply" in names, "tools/list has plan and apply")
                plan_tool = next(t for t in tools if t.name == "terraform_plan")
                check(plan_tool.input_schema.get("additionalProperties") is False, "schemas are strict")
                check(plan_tool.annotations.read_only_hint is True, "plan is annotated read-only")

                r = await session.call_tool("terraform_init", {"path": "basic"})
                check(not r.is_error, "init succeeds")
                r = await session.call_tool("terraform_validate", {"path": "basic"})
                check(not r.is_error and r.structured_content["valid"] is True, "validate reports valid")

                progress = []

                async def on_progress(p, total, message):
                    progress.append(message)

                r = await session.call_tool(
                    "terraform_plan",
                    {"path": "basic", "vars": {"name": "python", "db_password": "py-secret-value-42"}},
                    progress_callback=on_progress,
                )
                sc = r.structured_content
                check(not r.is_error and sc["summary"]["counts"]["add"] == 1, "plan adds one resource")
                check(any("Plan to create" in (m or "") for m in progress), "plan progress reaches the client")
                check("py-secret-value-42" not in json.dumps(sc), "sensitive variable is not in the result")

                r = await session.call_tool("terraform_apply", {"path": "basic", "plan_id": sc["plan_id"]})
                check(not r.is_error, "apply succeeds")
                r = await session.call_tool("terraform_output", {"path": "basic"})
                outs = r.structured_content["outputs"]
                check(outs["greeting"]["value"] == "hello python", "output after apply")
                check(outs["password"]["value"] == "(sensitive value)", "sensitive output is redacted")

                r = await session.call_tool("terraform_plan", {"path": "../../etc"})
                check(r.is_error and r.structured_content["error"]["kind"] == "confinement", "traversal is refused")
                r = await session.call_tool("terraform_plan", {"path": "basic", "targets": ["-destroy"]})
                check(
                    r.is_error and r.structured_content["error"]["fields"][0]["pointer"] == "/targets/0",
                    "flag-like target is refused, naming the field",
                )


if __name__ == "__main__":
    try:
        asyncio.run(main(*sys.argv[1:4]))
    except Exception as e:  # report and fail
        print(f"not ok - {type(e).__name__}: {e}")
        print(f"python sdk: {PASSED} passed, 1 failed")
        sys.exit(1)
    print(f"python sdk: {PASSED} passed, 0 failed")
