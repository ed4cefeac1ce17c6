"""Entry point: `python -m servers <model> [flags]`, model one of threaded, gevent, asyncio, multiproc.

gevent must monkey-patch the standard library before anything else imports it, so this
module patches first and imports the rest afterwards.
"""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "gevent":
    from gevent import monkey

    monkey.patch_all()
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()

import importlib
import json
import logging

from servers import cpuwork
from servers import settings as settings_module

RUNTIMES = {
    "threaded": "servers.run_threaded",
    "gevent": "servers.run_gevent",
    "asyncio": "servers.run_asyncio",
    "multiproc": "servers.run_multiproc",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(f"usage: python -m servers {{{','.join(RUNTIMES)}}} [flags]  (add --help after the model)")
        return 0 if argv else 2
    model, rest = argv[0], argv[1:]
    try:
        settings = settings_module.load(model, rest)
    except settings_module.SettingsError as exc:
        print(f"serverlab: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s serverlab-{model}[%(process)d] %(message)s",
    )
    log = logging.getLogger("serverlab")
    log.info("effective settings %s", json.dumps(settings.public()))
    if settings.extra_cpu_us:  # calibrated here, once, before multiproc forks its workers
        log.warning("lab only: %g µs of extra CPU work in every request (LAB_EXTRA_CPU_US): %d iterations",
                    settings.extra_cpu_us, cpuwork.iterations_for(settings.extra_cpu_us))
    runtime = importlib.import_module(RUNTIMES[model])
    runtime.serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
