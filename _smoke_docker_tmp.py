import anyio, time, logging
from gateway.fleet import Fleet
from gateway.backends import docker as d, _docker_io as io
from tests._support import config
T0=time.perf_counter()
def tr(name, fn):
    async def w(*a, **k):
        print(f"{time.perf_counter()-T0:.3f} >{name}")
        try: return await fn(*a, **k)
        finally: print(f"{time.perf_counter()-T0:.3f} <{name}")
    return w
d._Container._stop = tr("stop", d._Container._stop)
d._Container._record_exit = tr("record", d._Container._record_exit)
d._Container.remove = tr("remove", d._Container.remove)
io.AttachedIO.close_input = tr("close_input", io.AttachedIO.close_input)
async def main():
    fleet = Fleet(config({"t": {"type": "docker", "image": "local/mcp-time:test", "pull": "never"}}))
    async with fleet.running():
        with anyio.fail_after(60):
            await fleet.wait_started()
        b = fleet.backends["t"]
        r = await b.request("tools/call", {"name": "get_current_time", "arguments": {"timezone": "UTC"}})
        print(f"{time.perf_counter()-T0:.3f} exit")
    print("stop", [l.text for l in b.log.lines], b.log.exit_code)
anyio.run(main)
